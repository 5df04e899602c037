#!/usr/bin/env bash
# Viewer benchmark (not a timed test): the time a 15-task, 150-round run takes to open in
# headless Chromium (target <= 1 s) and the wasm's size (target <= 1 MB, plotly.js aside).
# Needs what scripts/viewer-setup.sh installs. What "opens" means and the figures measured:
# tests/viewer/bench.mjs.
#   usage: scripts/viewer-bench.sh [other site folder ...] [loads] [bench.mjs flags]
# Other site folders (a report of the same run made with another viewer, for one) are timed
# in the same session, their loads alternating with this viewer's.
# On the shared 2-core machine at load average 4.9-5.6 (2026-11-30, medians of 7 loads, three
# runs): open 680, 648, 627 ms, all views 1.2-1.3 s, wasm 773,470 bytes, plotly.min.js
# 1,099,226 bytes; the viewer before (official cartesian plotly.js bundle), timed in the same
# runs: 918, 830, 837 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${CARGO_TARGET_DIR:-$PWD/target}/viewer-bench
RKIF_VIEWER_BENCH_OUT=$out cargo test -q -p rkif-tests --test viewer -- --ignored write_benchmark_site >/dev/null
wasm=$(stat -c %s rkif-viewer/dist/rkif_viewer_bg.wasm)
echo "wasm: $wasm bytes ($(( wasm / 1024 )) KiB; target <= 1 MiB); plotly.min.js: $(stat -c %s rkif-viewer/dist/plotly.min.js) bytes"
echo "run data: $(du -sb "$out/site/runs" | cut -f1) bytes, $(find "$out/site/runs" -type f | wc -l) files"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
node tests/viewer/bench.mjs "$out/site" "$@"
