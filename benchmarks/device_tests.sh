#!/usr/bin/env bash
# The CUDA-marked tests on the GPU (run at the start of every device call). Only the packages
# that hold them are collected: the device image lacks some test-only extras (soundfile).
# Writes $OUT/cuda-tests.txt (pytest -vv, i.e. -v past the -q of pyproject.toml: one line per test, the slowest 15 with their times);
# a failure is reported but does not stop the call. TEST_TIMEOUT (s) bounds the whole run.
out="${OUT:-/tmp}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader \
    | tee "$out/cuda-tests.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    | tee -a "$out/cuda-tests.txt"
timeout "${TEST_TIMEOUT:-480}" python3 -m pytest -vv -rfE --durations=15 -p no:cacheprovider \
    -m cuda tests/kernels tests/patterns tests/model tests/sample tests/train "$@" \
    >> "$out/cuda-tests.txt" 2>&1
status=$?
grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" "$out/cuda-tests.txt" | tail -60
echo "cuda tests exit $status" | tee -a "$out/cuda-tests.txt"
