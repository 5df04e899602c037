#!/usr/bin/env bash
# The one prepared GPU check of issue #8 (item 4), for a session that is lent a GPU machine.
#
# On the GPU machine, in the repository root, it
#   1. checks what it needs (nvidia-smi, nvcc, cargo, the benchmark data, a model) and says
#      what is missing,
#   2. builds rkif with `--features cuda`,
#   3. runs the test suite (rkif-core's library, session, cli and sweep tests),
#   4. runs Recurrent-KIF on Standard CL order 1 (`standard-1`) with the reference T5
#      hyper-parameters (`reference-t5`: lr 3e-4, micro-batch 2 x 4 accumulation, 50
#      warm-up steps, LoRA r 8 / alpha 32 on q and v, rounds of 8 inner + 4 outer steps,
#      2% replay memory, best-val selection), with LoRA on `q_proj`/`v_proj` because the
#      model is LLaMA-family, on the largest model it finds (below), for at most
#      RKIF_GPU_RUN_S seconds,
#   5. brings back under $OUT: gpu-check.log (every step's output and time), the run
#      folder as run-rkif.tar.gz (adapters and checkpoint included) and its metrics.json.
# Record what happened even when the time ran out: the log says which step got how far, and
# an unfinished run folder still holds its finished tasks (and resumes with `rkif run`).
#
# Call it through the device tool as, for example,
#     run(command="scripts/gpu-check.sh", carry=[".gpu"], timeout_s=590)
# after `scripts/gpu-check.sh --stage` here, which copies what the device machine lacks into
# `.gpu/` (ignored through .git/info/exclude): the benchmark's kif/ and superni_raw/
# folders (about 43 MB; the task orders name every task, so all of them). Limits that
# shape it (device tool README): one command runs at most 10 minutes, a session has 15
# minutes of device time, the tree that travels is at most 64 MiB.
#
# Known obstacles, found while writing it (no GPU was lent to that session, so it has not
# run yet):
#   - The SmolLM2-135M-Instruct GGUF (98 MB) is over the 64 MiB that travels. The script
#     uses RKIF_GPU_MODEL if set (a GGUF file or a Hugging Face folder on that machine),
#     else `.gpu/model.gguf` if a smaller GGUF was staged, else the embedded base model
#     (`data/base-model`, in the repository), and says which.
#   - The device image is described as CUDA, PyTorch and friends; if it has no Rust
#     toolchain (`cargo`) or cannot reach crates.io, step 2 cannot build and the script
#     stops there, saying so. Vendored crates (`cargo vendor`) are far over 64 MiB.
#
# Knobs (environment): RKIF_GPU_BUILD_S (default 330), RKIF_GPU_TEST_S (90),
# RKIF_GPU_RUN_S (420), RKIF_GPU_EPOCHS (1: the reference trains 10 epochs of 1000
# examples per task; one epoch is 125 steps), RKIF_GPU_MAX_EVAL (500 test examples per
# task), RKIF_GPU_MODEL.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--stage" ]; then
  # Here, before the call: the benchmark (without the raw pools) into .gpu/.
  src=${RKIF_DATA_DIR:-../shared/data/cl_benchmark}
  dst=.gpu/cl_benchmark
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> "$(git rev-parse --git-path info/exclude)"
  rm -rf "$dst"
  mkdir -p "$dst/configs"
  cp "$src/MANIFEST.json" "$dst/"
  cp "$src"/configs/*.json "$dst/configs/"
  # Every task that a task order names must be present: all of kif/ and superni_raw/.
  cp -r "$src/kif" "$src/superni_raw" "$dst/"
  du -sh .gpu
  echo "staged; now: run(command=\"scripts/gpu-check.sh\", carry=[\".gpu\"], timeout_s=590)"
  exit 0
fi

OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/gpu-check.log
exec > >(tee -a "$LOG") 2>&1
started=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
command -v nvcc && nvcc --version | tail -1 || echo "no nvcc (candle's CUDA kernels need it)"
command -v cargo && cargo --version || { echo "no cargo: this machine cannot build rkif; stopping"; exit 2; }

data=${RKIF_DATA_DIR:-}
for d in .gpu/cl_benchmark shared/data/cl_benchmark ../shared/data/cl_benchmark; do
  [ -z "$data" ] && [ -f "$d/configs/task_orders.json" ] && data=$d
done
[ -n "$data" ] || { echo "no benchmark data (run scripts/gpu-check.sh --stage here first); stopping"; exit 2; }
export RKIF_DATA_DIR=$data
echo "data: $data"

model=${RKIF_GPU_MODEL:-}
if [ -z "$model" ]; then
  for m in .gpu/model.gguf .models/SmolLM2-135M-Instruct.Q4_1.gguf; do
    [ -z "$model" ] && [ -f "$m" ] && model=$m
  done
fi
echo "model: ${model:-the embedded base model data/base-model (no GGUF here)}"

step "build (--features cuda)"
timeout "${RKIF_GPU_BUILD_S:-330}" cargo build -p rkif-core --features cuda --bin rkif --tests
build=$?
echo "build exit: $build"
[ $build -eq 0 ] || { echo "the build did not finish; stopping"; exit 3; }

step "tests (CPU and what they touch; the GPU run is below)"
RAYON_NUM_THREADS=4 timeout "${RKIF_GPU_TEST_S:-90}" \
  cargo test -p rkif-core --features cuda --lib --test session --test cli --test sweep
echo "tests exit: $?"

step "Recurrent-KIF, standard-1, reference-t5 hyper-parameters, on cuda:0"
cfg=$OUT/gpu-run.toml
# Keys not given keep their defaults, which are the reference's T5 hyper-parameters
# (RunConfig::default, the `reference-t5` preset).
case "$model" in
  "") source_toml=$'kind = "local"\npath = "data/base-model"';;
  *.gguf) source_toml=$'kind = "gguf"\npath = "'"$model"'"';;
  *) source_toml=$'kind = "local"\npath = "'"$model"'"';;
esac
cat > "$cfg" <<TOML
method = "rkif"
seed = 1
[model]
device = "cuda:0"
[model.source]
$source_toml
[model.lora]
targets = ["q_proj", "v_proj"]
[optim]
epochs = ${RKIF_GPU_EPOCHS:-1}
[eval]
max_examples_per_task = ${RKIF_GPU_MAX_EVAL:-500}
[data]
order = "standard-1"
dir = "$data"
TOML
cat "$cfg"
target/debug/rkif run --config "$cfg" --method rkif --print-config > "$OUT/gpu-run-resolved.toml" \
  || { echo "the config was refused; stopping"; exit 4; }
timeout "${RKIF_GPU_RUN_S:-420}" target/debug/rkif --threads 8 run --config "$cfg" \
  --method rkif --out "$OUT/runs"
echo "run exit: $? (124 = stopped at RKIF_GPU_RUN_S; the folder holds the finished tasks)"

step "bring back"
if [ -d "$OUT/runs/rkif" ]; then
  cp "$OUT/runs/rkif/metrics.json" "$OUT/metrics.json" 2>/dev/null || echo "no metrics.json yet"
  tar -C "$OUT/runs" -czf "$OUT/run-rkif.tar.gz" rkif
  rm -rf "$OUT/runs"
  ls -la "$OUT"
fi
step "done"
