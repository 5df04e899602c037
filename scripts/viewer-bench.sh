#!/usr/bin/env bash
# Viewer benchmark (not a timed test): the time a 15-task, 150-round run takes to open in
# headless Chromium (target <= 1 s) and the wasm's size (target <= 1 MB, plotly.js aside).
# Needs what scripts/viewer-setup.sh installs. What "opens" means and the figures measured:
# tests/viewer/bench.mjs. On the shared 2-core machine at load average ~9 (2026-11-30):
# open 0.96-1.06 s (median of 7 loads, three runs; 0.93 s at load 7), all views 1.5-1.9 s,
# wasm 772,640 bytes; the viewer before took 1.4-1.8 s to open at the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${CARGO_TARGET_DIR:-$PWD/target}/viewer-bench
RKIF_VIEWER_BENCH_OUT=$out cargo test -q -p rkif-tests --test viewer -- --ignored write_benchmark_site >/dev/null
wasm=$(stat -c %s rkif-viewer/dist/rkif_viewer_bg.wasm)
echo "wasm: $wasm bytes ($(( wasm / 1024 )) KiB; target <= 1 MiB); plotly.min.js: $(stat -c %s rkif-viewer/dist/plotly.min.js) bytes"
echo "run data: $(du -sb "$out/site/runs" | cut -f1) bytes, $(find "$out/site/runs" -type f | wc -l) files"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
node tests/viewer/bench.mjs "$out/site"
