#!/usr/bin/env bash
# The one test command of rkif (README, "Running the tests"; CI calls it too).
#
# Needs: the Rust toolchain with the wasm32-unknown-unknown target, the benchmark data and
# Hugging Face fixtures (../shared by default; RKIF_DATA_DIR, RKIF_HF_FIXTURES override), and the
# SmolLM2 test model (scripts/fetch-test-model.sh; RKIF_SMOLLM2_GGUF overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings
# The notebook display code (feature `evcxr`) is not in the default build.
cargo clippy -p rkif-core --features evcxr --lib -- -D warnings

step "build the report/eval layer for wasm32 without candle"
cargo build -p rkif-core --no-default-features --target wasm32-unknown-unknown

step "tests"
# One tensor thread per test process: the tests run in parallel, and small models are faster
# single-threaded on these machines.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
# Benches are built by clippy above and run with `cargo bench`; here only their correctness matters.
cargo test --workspace --lib --bins --tests --examples
cargo test --workspace --doc
cargo test -p rkif-core --features evcxr --lib display

step "viewer unit tests in headless Chromium (wasm-bindgen-test)"
scripts/viewer-test.sh
