#!/usr/bin/env bash
# The viewer's wasm-bindgen-test unit tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-60}
cargo test -p rkif-viewer --target wasm32-unknown-unknown "$@"
