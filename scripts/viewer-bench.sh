#!/usr/bin/env bash
# Viewer benchmark (not a timed test): the time a 15-task, 150-round run takes to open in
# headless Chromium (target <= 1 s) and the wasm's size (target <= 1 MB, plotly.js aside).
# Needs what scripts/viewer-setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${CARGO_TARGET_DIR:-$PWD/target}/viewer-bench
RKIF_VIEWER_BENCH_OUT=$out cargo test -q -p rkif-tests --test viewer -- --ignored write_benchmark_site >/dev/null
wasm=$(stat -c %s rkif-viewer/dist/rkif_viewer_bg.wasm)
echo "wasm: $wasm bytes ($(( wasm / 1024 )) KiB; target <= 1 MiB); plotly.min.js: $(stat -c %s rkif-viewer/dist/plotly.min.js) bytes"
echo "run data: $(du -sb "$out/site/runs" | cut -f1) bytes, $(find "$out/site/runs" -type f | wc -l) files"
node tests/viewer/bench.mjs "$out/site"
