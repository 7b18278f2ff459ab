#!/usr/bin/env bash
# Create or reuse ./.venv and install sparse-transformer into it with the extras given as $1.
# With no CUDA device the CPU build of torch is installed (pip install torch==2.13.0 takes the
# copy on local disk on our machines), so set-up takes minutes rather than a multi-GB download.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train,pictures}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "$PY" -m pip install -q "torch>=2.5"
    else
        "$PY" -m pip install -q "torch==2.13.0"
    fi
fi
stamp="$VENV/.installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$PY" -m pip install -q -e ".[$extras]"
    touch "$stamp"
fi
