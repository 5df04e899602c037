#!/usr/bin/env bash
# Installs what the notebooks and their test need, skipping whatever is already there:
#   - Jupyter's headless runner (nbconvert, nbclient) and jupyter_client from PyPI;
#   - the evcxr Jupyter kernel (`cargo install evcxr_jupyter`, pinned to the version the
#     notebooks were tested with; 10-20 minutes to build the first time, niced) and its kernel
#     spec (`evcxr_jupyter --install`);
#   - the SmolLM2 test model for notebook 05 (scripts/fetch-test-model.sh).
# Set RKIF_NOTEBOOKS_LAB=1 to install JupyterLab too (to open the notebooks, not to test them).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
EVCXR_VERSION=0.22.0

step "Jupyter (nbconvert, nbclient, jupyter_client)"
if python3 -c 'import nbconvert, nbclient, jupyter_client' 2>/dev/null; then
  echo "already installed"
else
  python3 -m pip install --quiet nbconvert nbclient jupyter_client
fi
if [ "${RKIF_NOTEBOOKS_LAB:-0}" = 1 ] && ! python3 -c 'import jupyterlab' 2>/dev/null; then
  python3 -m pip install --quiet jupyterlab
fi

step "evcxr Jupyter kernel"
export PATH="$HOME/.cargo/bin:$PATH"
if command -v evcxr_jupyter >/dev/null 2>&1; then
  echo "evcxr_jupyter present: $(command -v evcxr_jupyter)"
else
  nice -n 10 cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked
fi
if python3 -m jupyter kernelspec list --json 2>/dev/null | grep -q '"rust"'; then
  echo 'kernel spec rust present'
else
  evcxr_jupyter --install
fi

step "test model for notebook 05"
bash scripts/fetch-test-model.sh
