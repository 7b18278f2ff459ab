#!/usr/bin/env bash
# Pack a prepared data set (data/NAME, from `sparse-transformer prepare NAME`) as
# .devdata/NAME.tar.xz, which benchmarks/device_paper.sh unpacks on the GPU machine. The device
# tool carries at most 64 MiB per call, so TRAIN_BYTES (optional) keeps only the first
# TRAIN_BYTES of train.bin, and meta.json's train size and count say so (its baselines stay
# the whole split's). Example (the audio rows; the whole split compresses to 67.5 MB):
#   bash benchmarks/devdata.sh wesnoth-music 60000000
set -euo pipefail
name="${1:?usage: bash benchmarks/devdata.sh NAME [TRAIN_BYTES]}"
keep="${2:-}"
if ! [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
    echo "devdata: NAME is a data set's name (a folder of data/), not '$name'" >&2
    exit 2
fi
if [ -n "$keep" ] && ! [[ "$keep" =~ ^[1-9][0-9]*$ ]]; then
    echo "devdata: TRAIN_BYTES must be a positive whole number, not '$keep'" >&2
    exit 2
fi
src="data/$name"
if ! [ -f "$src/meta.json" ]; then
    echo "devdata: $src is not prepared (run: sparse-transformer prepare $name)" >&2
    exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/$name"
if [ -n "$keep" ]; then
    python3 - "$work/$name" "$keep" <<'PY'
import json, os, sys
folder, keep = sys.argv[1], int(sys.argv[2])
train = os.path.join(folder, "train.bin")
if keep <= 0 or keep > os.path.getsize(train):
    sys.exit(f"devdata: TRAIN_BYTES must be in 1..{os.path.getsize(train)}")
os.truncate(train, keep)
meta_path = os.path.join(folder, "meta.json")
meta = json.load(open(meta_path))
for field in ("sizes", "counts"):
    if field in meta:
        meta[field]["train"] = keep
meta["trimmed_for_device"] = (f"train.bin cut to its first {keep} bytes to fit the device "
                              "tool's 64 MiB; the baselines are the whole split's")
json.dump(meta, open(meta_path, "w"), indent=1)
PY
fi
mkdir -p .devdata
tar -C "$work" -cf - "$name" | xz -T2 -6 > ".devdata/$name.tar.xz.part"
mv ".devdata/$name.tar.xz.part" ".devdata/$name.tar.xz"
size=$(stat -c %s ".devdata/$name.tar.xz")
echo "devdata: .devdata/$name.tar.xz, $size bytes"
[ "$size" -le 67108864 ] || echo "devdata: over the device tool's 64 MiB: pass TRAIN_BYTES" >&2
