#!/usr/bin/env bash
# The main job. Until the model lands: draw the paper's Figure 3 patterns.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh train,pictures
ST=.venv/bin/sparse-transformer
mkdir -p out
$ST patterns show strided --stride 16 --n-ctx 256 --heads 2 --mode split --png out/strided.png
$ST patterns show fixed --stride 16 --summary 4 --n-ctx 256 --png out/fixed.png
$ST patterns cost fixed --stride 128 --summary 32 --distinct 4 --heads 8 --n-ctx 16384 --block 32
