#!/usr/bin/env bash
# Rebuild the embedded base model from its recipe and check it equals data/base-model bit for
# bit (f32 on the CPU, one thread). Minutes in a release build; not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
RAYON_NUM_THREADS=1 cargo test --release -p rkif-core --test default_benchmark -- --ignored base_model
