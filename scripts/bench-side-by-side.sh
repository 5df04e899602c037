#!/usr/bin/env bash
# rkif's backbone speed next to PyTorch + PEFT on the same machine, in the same run (issue #3,
# "Speed"; results in BENCHMARKS.md).
#
#   scripts/bench-side-by-side.sh
#
# For 1 and then 2 threads (RAYON_NUM_THREADS for rkif; torch.set_num_threads, OMP_NUM_THREADS
# and MKL_NUM_THREADS for PyTorch) it measures, config by config and one right after the
# other so both see the same machine load:
#   - the f32 matmul peak (rkif's bench, candle);
#   - the LoRA training step of each config: PyTorch anchor, rkif, and rkif's full fine-tuning;
#   - greedy decoding (8 tokens after a 100-token prompt) for t5_small and smollm2_135m.
# Then it prints one table: medians, rkif / PyTorch ratios (wall time, and CPU time, which
# moves much less when other jobs share the cores), LoRA / full, FLOP rates as a share of peak.
#
# Environment (defaults in brackets):
#   BENCH_THREADS  thread counts to run ["1 2"]
#   BENCH_CONFIGS  configs ["t5_d256 t5_small smollm2_135m"]
#   BENCH_WARMUP / BENCH_REPS / BENCH_FULL_REPS   untimed and timed repetitions of each
#                  measurement, both sides [1 / 3 / 2] (the anchor's own default is 2 / 5)
#   BENCH_MALLOC   shipped|tuned|default [shipped]. How glibc's malloc treats freed memory.
#                  candle allocates a fresh buffer for every op and gradient; with glibc's
#                  defaults large freed buffers go back to the kernel and are faulted in (zeroed)
#                  again on the next allocation (BENCHMARKS.md, "The allocator").
#                  "shipped": each side as it ships: rkif keeps freed memory itself
#                  (`rkif_core::allocator`, called by the `rkif` binary and this bench), PyTorch
#                  with glibc's defaults. "tuned": MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_
#                  and MALLOC_TOP_PAD_ set for both sides (rkif then leaves them as they are).
#                  "default": glibc's defaults on both sides (RKIF_MALLOC=default for rkif).
#   BENCH_OUT      where the raw results go [target/bench-side-by-side]
#   RKIF_PT_PYTHON python with torch, transformers and peft [/work/pt-anchor/bin/python]
#   RKIF_PT_ANCHOR the anchor script [../shared/bench/pytorch_anchor.py]
set -euo pipefail
cd "$(dirname "$0")/.."

threads_list=${BENCH_THREADS:-"1 2"}
configs=${BENCH_CONFIGS:-"t5_d256 t5_small smollm2_135m"}
warmup=${BENCH_WARMUP:-1}
reps=${BENCH_REPS:-3}
full_reps=${BENCH_FULL_REPS:-2}
out=${BENCH_OUT:-target/bench-side-by-side}
py=${RKIF_PT_PYTHON:-/work/pt-anchor/bin/python}
anchor=${RKIF_PT_ANCHOR:-../shared/bench/pytorch_anchor.py}

[[ -x $py ]] || py=python3
[[ -f $anchor ]] || { echo "no PyTorch anchor at $anchor (set RKIF_PT_ANCHOR)" >&2; exit 1; }
"$py" -c 'import torch, transformers, peft' 2>/dev/null ||
    { echo "$py lacks torch/transformers/peft (set RKIF_PT_PYTHON; see ../shared/bench/README.md)" >&2; exit 1; }

case ${BENCH_MALLOC:=shipped} in
    shipped) ;;
    tuned)
        export MALLOC_MMAP_THRESHOLD_=$((1 << 30)) MALLOC_TRIM_THRESHOLD_=$((1 << 34))
        export MALLOC_TOP_PAD_=$((1 << 29)) ;;
    default) export RKIF_MALLOC=default ;;
    *) echo "BENCH_MALLOC must be shipped, tuned or default" >&2; exit 1 ;;
esac

mkdir -p "$out"
results=$out/results.jsonl
: >"$results"

# The anchor's own measurement (`pytorch_anchor.py one NAME THREADS MODE`), with our repetition
# counts, tagged, and with the CPU seconds of each timed run: its clock is wrapped so that
# every perf_counter() call also notes process_time().
cat >"$out/anchor_with_cpu.py" <<'EOF'
import contextlib, importlib.util, io, json, statistics, sys, time

path, name, threads, mode, warmup, reps = sys.argv[1:7]
spec = importlib.util.spec_from_file_location("pytorch_anchor", path)
anchor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(anchor)
anchor.WARMUP, anchor.MEASURE = int(warmup), int(reps)
marks = []

class Clock:
    def __getattr__(self, attr):
        return getattr(time, attr)

    def perf_counter(self):
        marks.append(time.process_time())
        return time.perf_counter()

anchor.time = Clock()
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    anchor.one(name, int(threads), mode)
for line in buf.getvalue().splitlines():
    if line.startswith("RESULT "):
        r = json.loads(line[len("RESULT "):])
        # perf_counter is called twice per run (start, end); the warm-up runs come first.
        cpu = [b - a for a, b in zip(marks[0::2], marks[1::2])][anchor.WARMUP:]
        r["impl"] = "pytorch"
        r["cpu_median_s"] = round(statistics.median(cpu), 3) if cpu else None
        print("RESULT " + json.dumps(r), flush=True)
EOF

echo "building the rkif bench"
cargo bench -p rkif-core --bench backbone_speed --no-run 2>&1 | tail -1

rkif() { # rkif bench with the given arguments; RESULT lines to the results file
    cargo bench -q -p rkif-core --bench backbone_speed -- \
        --warmup "$warmup" --reps "$reps" --full-reps "$full_reps" "$@" 2>&1 |
        grep '^RESULT ' | sed 's/^RESULT //' | tee -a "$results"
}
pytorch() { # anchor NAME MODE; RESULT line to the results file
    "$py" "$out/anchor_with_cpu.py" "$anchor" "$1" "$threads" "$2" "$warmup" "$reps" 2>/dev/null |
        grep '^RESULT ' | sed 's/^RESULT //' | tee -a "$results" ||
        echo "PyTorch anchor failed: $1 $2 ($threads threads)" >&2
}

{
    date -u +"started %Y-%m-%dT%H:%M:%SZ"
    uptime
    nproc
    rustc --version
    grep -A1 '^name = "candle-core"' Cargo.lock | tr '\n' ' '; echo
    "$py" -c 'import sys, torch, transformers, peft; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'
    grep -m1 'model name' /proc/cpuinfo || true
    echo "malloc: $BENCH_MALLOC"
} | tee "$out/machine.txt"

for threads in $threads_list; do
    export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
    echo "== $threads thread(s)"
    rkif --mode peak
    for config in $configs; do
        pytorch "$config" train
        rkif --config "$config" --mode lora,full
        if [[ $config != t5_d256 ]]; then
            pytorch "$config" generate
            rkif --config "$config" --mode generate
        fi
    done
done
uptime | tee -a "$out/machine.txt"

python3 - "$results" <<'EOF' | tee "$out/table.md"
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def find(impl, name, mode, threads):
    return next((r for r in rows if r.get("impl") == impl and r["name"] == name
                 and r["mode"] == mode and r["threads"] == threads), None)
def fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"
def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b

threads = sorted({r["threads"] for r in rows})
# The peak and the shares of it in CPU time (FLOPs per CPU second), which the load moves
# much less than wall time.
peaks = {t: next((r.get("gflops_per_cpu_s") for r in rows if r["mode"] == "peak" and r["threads"] == t), None)
         for t in threads}
print("| config | threads | step | rkif s | PyTorch s | ratio (wall) | rkif CPU s | PyTorch CPU s | ratio (CPU) | rkif full FT s | LoRA / full | full FT CPU s | LoRA / full (CPU) | rkif % of peak (CPU) | PyTorch % of peak (CPU) | load start |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for t in threads:
    for name in dict.fromkeys(r["name"] for r in rows if r["mode"] == "train"):
        ours, theirs = find("rkif", name, "train", t), find("pytorch", name, "train", t)
        full = find("rkif", name, "train_full", t)
        o = ours and ours["median_s"]
        p = theirs and theirs["median_s"]
        oc = ours and ours.get("cpu_median_s")
        pc = theirs and theirs.get("cpu_median_s")
        share = lambda s: None if not (ours and s and peaks[t]) else 100 * ours["gflop"] / s / peaks[t]
        print(f"| {name} | {t} | LoRA train | {fmt(o)} | {fmt(p)} | {fmt(ratio(o, p), 2)} | "
              f"{fmt(ours and ours.get('cpu_median_s'))} | {fmt(theirs and theirs.get('cpu_median_s'))} | "
              f"{fmt(ratio(ours and ours.get('cpu_median_s'), theirs and theirs.get('cpu_median_s')), 2)} | "
              f"{fmt(full and full['median_s'])} | {fmt(ratio(o, full and full['median_s']), 2)} | "
              f"{fmt(full and full.get('cpu_median_s'))} | {fmt(ratio(oc, full and full.get('cpu_median_s')), 2)} | "
              f"{fmt(share(oc), 0)} | {fmt(share(pc), 0)} | {ours and ours['loadavg_1m_start']} |")
    for name in dict.fromkeys(r["name"] for r in rows if r["mode"] == "generate"):
        ours, theirs = find("rkif", name, "generate", t), find("pytorch", name, "generate", t)
        o = ours and ours["median_s"]
        p = theirs and theirs["median_s"]
        tps = lambda s: None if not s else 8 / s
        print(f"| {name} | {t} | generate 8 tokens (tokens/s: rkif {fmt(tps(o), 1)}, PyTorch {fmt(tps(p), 1)}) | "
              f"{fmt(o)} | {fmt(p)} | {fmt(ratio(o, p), 2)} | "
              f"{fmt(ours and ours.get('cpu_median_s'))} | {fmt(theirs and theirs.get('cpu_median_s'))} | "
              f"{fmt(ratio(ours and ours.get('cpu_median_s'), theirs and theirs.get('cpu_median_s')), 2)} | – | – | – | – | – | – | {ours and ours['loadavg_1m_start']} |")
print()
for t in threads:
    wall = next((r["gflops_per_s"] for r in rows if r["mode"] == "peak" and r["threads"] == t), None)
    print(f"f32 matmul peak (candle, 2048^3), {t} thread(s): {fmt(peaks[t], 1)} GFLOP per CPU second, "
          f"{fmt(wall, 1)} GFLOP/s of wall time")
EOF
echo "raw results: $results; table: $out/table.md"
