#!/usr/bin/env bash
# On a GPU machine (the device tool): unpack the data sets carried as .devdata/NAME.tar.xz
# (made here with `bash benchmarks/devdata.sh NAME [TRAIN_BYTES]`), then run
# `benchmarks/paper_gpu.py train` for each MODALITY:VARIANTS argument, MINUTES (default 4)
# each, logging to $OUT/log.txt. Example:
#   MINUTES=4 bash benchmarks/device_paper.sh text:strided,dense image:strided
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-out/paper-gpu}"
mkdir -p "$out" data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/log.txt"
for archive in .devdata/*.tar.xz; do
    name=$(basename "$archive" .tar.xz)
    [ -f "data/$name/meta.json" ] || python3 -c "import sys, tarfile; \
tarfile.open(sys.argv[1]).extractall('data', filter='data')" "$archive"
done
for job in "$@"; do
    python3 benchmarks/paper_gpu.py train "${job%%:*}" --variants "${job#*:}" \
        --minutes "${MINUTES:-4}" --out "$out" 2>&1 | tee -a "$out/log.txt"
done
