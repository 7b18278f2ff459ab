#!/usr/bin/env bash
# Run the whole test suite on the CPU (Triton kernels through TRITON_INTERPRET=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh dev
# The learning test (tests/train/test_learning.py) trains the demo's preset on the real wiki
# bytes; preparing them is a no-op once done (about 30 MB of download the first time).
.venv/bin/sparse-transformer prepare wiki
exec .venv/bin/python -m pytest "$@"
