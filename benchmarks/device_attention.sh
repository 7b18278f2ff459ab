#!/usr/bin/env bash
# One device call: checks, tunes and times the attention kernels, writes JSON and logs to $OUT.
# Run from the repository root on the GPU machine (its python3 has torch and triton):
#   SECTIONS=check,tune,main,profile,long BUDGET=400 bash benchmarks/device_attention.sh
set -o pipefail
out="${OUT:-benchmarks/results}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/triton-cache}"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
python3 benchmarks/attention.py --out "$out" --sections "${SECTIONS:-check,tune,main,profile,long,flex}" \
  --budget "${BUDGET:-400}" "$@" 2>&1 | tee "$out/stdout.txt"
