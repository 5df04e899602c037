#!/usr/bin/env bash
# Installs what the viewer's build and browser tests need on a fresh Debian machine; each
# step is skipped when its tool is already there.
#   - Chromium and chromedriver (apt), for Playwright and wasm-bindgen-test
#   - the wasm32-unknown-unknown target
#   - wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock
#   - tests/viewer/node_modules from its committed package-lock.json (npm ci)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "==> apt: chromium chromium-driver"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  $sudo_cmd apt-get install -y -q chromium chromium-driver
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "==> apt: nodejs npm"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y -q nodejs npm
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$want" != "$have" ]; then
  echo "==> cargo install wasm-bindgen-cli $want (found: ${have:-none}; takes minutes)"
  cargo install wasm-bindgen-cli --version "$want"
fi

if [ ! -d tests/viewer/node_modules/playwright-core ]; then
  echo "==> npm ci in tests/viewer"
  (cd tests/viewer && npm ci --no-audit --no-fund)
fi
echo "==> viewer setup done"
