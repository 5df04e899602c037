#!/usr/bin/env bash
# Lists, sorted, the files the built viewer (rkif-viewer/dist/) is made from. Its hash is
# recorded in dist/source-hash.txt by build-viewer.sh and checked by tests/tests/viewer.rs,
# which computes the same list in Rust: keep the two in step.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  find rkif-viewer/src rkif-viewer/static rkif-core/src/report rkif-core/src/eval -type f \
    ! -name 'site.rs'
  printf '%s\n' rkif-viewer/Cargo.toml rkif-core/src/error.rs rkif-viewer/plotly/entry.js \
    rkif-viewer/plotly/package.json rkif-viewer/plotly/package-lock.json
} | LC_ALL=C sort
