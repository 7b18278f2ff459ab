#!/usr/bin/env bash
# Run the whole test suite on the CPU (Triton kernels through TRITON_INTERPRET=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh dev
exec .venv/bin/python -m pytest "$@"
