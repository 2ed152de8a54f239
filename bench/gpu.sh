#!/usr/bin/env bash
# SD2-size figures on a GPU (fp32 and bf16): the keypoint pass and the map-capture overhead.
# Run from the repository root on a CUDA machine with mvsk installed (`make install`):
#   bash bench/gpu.sh | tee bench/gpu.md
# then copy the tables into BENCHMARKS.md, saying which GPU they came from.
set -euo pipefail
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for dtype in float32 bfloat16; do
  echo; echo "## keypoint pass, $dtype"
  $PY bench/sk_pass.py --configs medium sd2 --device cuda --dtype $dtype --repeats 5
done
echo; echo "## one map layer step by step, SD2 (10² -> 128², 500 tokens), float32 maps"
$PY bench/map_kernel.py --layer sd2 --device cuda
for dtype in float32 bfloat16; do
  echo; echo "## generation per strategy, SD2-size UNet (random weights), $dtype"
  $PY bench/generate.py --configs sd2 --device cuda --dtype $dtype --memory
done
