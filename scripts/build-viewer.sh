#!/usr/bin/env bash
# Builds the browser viewer into rkif-viewer/dist/ (committed; embedded by
# rkif_core::report::site). Run it after changing the viewer, the report/eval code or
# Cargo.lock; tests/tests/viewer.rs fails while dist/ is stale.
#
# Needs: the wasm32-unknown-unknown target and wasm-bindgen-cli at the exact version of the
# wasm-bindgen crate in Cargo.lock (scripts/viewer-setup.sh installs both), and npm (plotly.js,
# fetched once and checked by hash; never a CDN at run time).
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

# plotly.js: the official "cartesian" partial bundle (heatmap, scatter, bar: every trace type
# report::figures uses) from npm, pinned by version and hash. A third of the full bundle's
# size (1.3 MB against 4.6 MB): parsing plotly.js is most of the page's start-up time.
# One line is put in front of it, V8's compile hint `//# allFunctionsCalledOnLoad`: Chromium
# then compiles all of plotly on a background thread while it downloads, instead of function
# by function on the main thread as the page first calls them (that lazy compiling was half
# of plotly's main-thread time at open; tests/viewer/bench.mjs). Other browsers ignore the
# comment. Both files are pinned: the npm one and the one with the hint.
plotly_version=3.0.1
plotly_sha256=27c5203ecba052de6447603696f39558f5d1961839ba7ab153639f66d3d0d569
hinted_sha256=b2a54022f0ac59e678fb81f6d02d8f0a4a0e6b525aaf7af4ef20ba9b13e587ee
compile_hint='//# allFunctionsCalledOnLoad'
if ! echo "$hinted_sha256  $dist/plotly.min.js" | sha256sum -c --quiet >/dev/null 2>&1; then
  scratch=$(mktemp -d)
  if echo "$plotly_sha256  $dist/plotly.min.js" | sha256sum -c --quiet >/dev/null 2>&1; then
    cp "$dist/plotly.min.js" "$scratch/plotly.min.js"   # npm's file, from an older build
  else
    (cd "$scratch" && npm pack --silent "plotly.js-cartesian-dist-min@$plotly_version" >/dev/null \
      && tar -xzf plotly.js-cartesian-dist-min-$plotly_version.tgz)
    cp "$scratch/package/plotly-cartesian.min.js" "$scratch/plotly.min.js"
  fi
  echo "$plotly_sha256  $scratch/plotly.min.js" | sha256sum -c --quiet
  { echo "$compile_hint"; cat "$scratch/plotly.min.js"; } > "$dist/plotly.min.js"
  rm -rf "$scratch"
  echo "$hinted_sha256  $dist/plotly.min.js" | sha256sum -c --quiet
fi

scripts/viewer-source-files.sh | xargs sha256sum | sha256sum | awk '{print $1}' > "$dist/source-hash.txt"
ls -l "$dist"
