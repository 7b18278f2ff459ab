#!/usr/bin/env bash
# The CUDA-marked tests on the GPU (run at the start of every device call). Only the packages
# that hold them are collected: the device image lacks some test-only extras (soundfile).
# Writes $OUT/cuda-tests.txt; a failure is reported but does not stop the call.
out="${OUT:-/tmp}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -x -p no:cacheprovider \
    -m cuda tests/kernels tests/patterns tests/model "$@" 2>&1 | tail -30 | tee "$out/cuda-tests.txt"
echo "cuda tests exit ${PIPESTATUS[0]}" | tee -a "$out/cuda-tests.txt"
