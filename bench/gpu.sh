#!/usr/bin/env bash
# SD2-size figures on a GPU (fp32 and bf16): the keypoint pass, the map-capture overhead and its floor, one map
# layer step by step, the keypoint step's peak memory (sk_step at StableKeypoints' settings), generation.
# Run from the repository root on a CUDA machine with mvsk installed (`make install`):
#   bash bench/gpu.sh | tee bench/gpu.md
# then copy the tables into BENCHMARKS.md, saying which GPU they came from.
set -euo pipefail
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for dtype in float32 bfloat16; do
  echo; echo "## keypoint pass, map-capture overhead and its floor, $dtype"
  $PY bench/sk_pass.py --configs medium sd2 --device cuda --dtype $dtype --repeats 5 --profile
done
echo; echo "## one map layer step by step and its floor, SD2 (10² -> 128², 500 tokens), float32 maps"
$PY bench/map_kernel.py --layer sd2 --device cuda
echo; echo "## one object's sk_step at StableKeypoints' settings, SD2-size UNet and VAE: peak memory (16 GB cards: < 14 GB)"
$PY bench/sk_memory.py --config sd2 --device cuda --dtypes float16 bfloat16 float32 --maps default views=1 --steps 3
for dtype in float32 bfloat16; do
  echo; echo "## generation per strategy, SD2-size UNet (random weights), $dtype"
  $PY bench/generate.py --configs sd2 --device cuda --dtype $dtype --memory
done
