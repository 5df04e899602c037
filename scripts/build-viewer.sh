#!/usr/bin/env bash
# Builds the browser viewer into rkif-viewer/dist/ (committed; embedded by
# rkif_core::report::site). Run it after changing the viewer, the report/eval code or
# Cargo.lock or rkif-viewer/plotly/; tests/tests/viewer.rs fails while dist/ is stale.
#
# Needs: the wasm32-unknown-unknown target and wasm-bindgen-cli at the exact version of the
# wasm-bindgen crate in Cargo.lock (scripts/viewer-setup.sh installs both), and npm (plotly.js's
# sources and esbuild, pinned by rkif-viewer/plotly/package-lock.json; only when the committed
# bundle does not match its hash; never a CDN at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dist=rkif-viewer/dist
target=${CARGO_TARGET_DIR:-$root/target}

want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')
if [ "$want" != "$have" ]; then
  echo "wasm-bindgen-cli $want needed (found: ${have:-none}); run scripts/viewer-setup.sh" >&2
  exit 1
fi

# Reproducible: no absolute paths of this machine in the wasm.
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$root=/rkif --remap-path-prefix=$HOME/.cargo=/cargo"
cargo build -p rkif-viewer --lib --release --target wasm32-unknown-unknown
mkdir -p "$dist"
wasm-bindgen --target web --no-typescript --out-dir "$dist" \
  "$target/wasm32-unknown-unknown/release/rkif_viewer.wasm"
cp rkif-viewer/static/index.html rkif-viewer/static/main.js rkif-viewer/static/style.css "$dist/"

# plotly.js: bundled here from npm's plotly.js source with only what rkif's figures draw
# (rkif-viewer/plotly/entry.js: plotly's core with scatter, plus bar and heatmap), by esbuild;
# both pinned by rkif-viewer/plotly/package-lock.json, the bundle pinned by hash. The official
# cartesian bundle also registers nine trace types and the world calendars the viewer never
# uses: 1.33 MB against 1.10 MB, and its start-up cost most of the page's opening time
# (tests/viewer/bench.mjs). The bundle starts with V8's compile hint
# `//# allFunctionsCalledOnLoad`: Chromium then compiles all of plotly on a background thread
# while it downloads, instead of function by function on the main thread as the page first
# calls them. Other browsers ignore the comment. The one stylesheet plotly's core asks for
# (maplibre's, for map subplots only) is left out. npm and the registry are needed only when the
# committed dist/plotly.min.js does not match the hash.
plotly_sha256=dcee8093396bbaf5c0d68d6c58e8ef00e292211af4dd8c0b1f233a9d392d0efb
banner='//# allFunctionsCalledOnLoad
/*! plotly.js 3.0.1 (core, bar, heatmap), bundled by rkif scripts/build-viewer.sh; MIT License, Copyright 2012-2025 Plotly, Inc. */'
if ! echo "$plotly_sha256  $dist/plotly.min.js" | sha256sum -c --quiet >/dev/null 2>&1; then
  (cd rkif-viewer/plotly && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  rkif-viewer/plotly/node_modules/.bin/esbuild rkif-viewer/plotly/entry.js --bundle --minify \
    --format=iife --global-name=Plotly --target=es2016 --define:global=window \
    --define:define.amd=false --define:process.env.NODE_DEBUG=false --loader:.css=empty \
    --log-level=warning \
    --banner:js="$banner" --outfile="$dist/plotly.min.js"
  echo "$plotly_sha256  $dist/plotly.min.js" | sha256sum -c --quiet
fi

scripts/viewer-source-files.sh | xargs sha256sum | sha256sum | awk '{print $1}' > "$dist/source-hash.txt"
ls -l "$dist"
