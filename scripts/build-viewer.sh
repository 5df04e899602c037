#!/usr/bin/env bash
# Builds the browser viewer into rkif-viewer/dist/ (committed; embedded by
# rkif_core::report::site). Run it after changing the viewer, the report/eval code or
# Cargo.lock; tests/tests/viewer.rs fails while dist/ is stale.
#
# Needs: the wasm32-unknown-unknown target and wasm-bindgen-cli at the exact version of the
# wasm-bindgen crate in Cargo.lock (scripts/viewer-setup.sh installs both). plotly.js comes
# from the plotly crate's bundled copy in the cargo registry (no CDN, no npm).
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

plotly=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/plotly-0.14.1/resource/plotly.min.js 2>/dev/null | head -1 || true)
if [ -z "$plotly" ]; then
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/plotly-0.14.1.crate 2>/dev/null | head -1 || true)
  if [ -z "$crate" ]; then
    (cd "$(mktemp -d)" && cargo new -q fetch && cd fetch && cargo add -q plotly@=0.14.1 && cargo fetch -q)
    crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/plotly-0.14.1.crate | head -1)
  fi
  tar -xzOf "$crate" plotly-0.14.1/resource/plotly.min.js > "$dist/plotly.min.js"
else
  cp "$plotly" "$dist/plotly.min.js"
fi

scripts/viewer-source-files.sh | xargs sha256sum | sha256sum | awk '{print $1}' > "$dist/source-hash.txt"
ls -l "$dist"
