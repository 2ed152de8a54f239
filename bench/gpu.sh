#!/usr/bin/env bash
# The GPU check, one command for a short loan of a GPU (about 8 minutes on one): the device tests on CUDA (discovery,
# extraction, training, generation with every strategy, evaluation; fp32 and a half-precision UNet; the SD2-size
# keypoint pass), then the SD2-size figures of bench/ (one object's sk_step peak memory at StableKeypoints' settings
# in fp16/bf16/fp32, the keypoint pass against its floor, generation per strategy, the mini model's training step at 64 and 128 px),
# written to one report. Each part has a time cap, so a slow part costs its cap and the report still comes back.
#   make gpu-check                              # report: outputs/gpu-check.md
#   PY=python3 bash bench/gpu.sh REPORT.md      # with another Python (mvsk importable, e.g. PYTHONPATH=.)
#   PARTS=tests bash bench/gpu.sh A.md; PARTS=bench bash bench/gpu.sh B.md   # the tests and the timed figures apart
# Then copy the tables into BENCHMARKS.md, saying which GPU they came from. Exits 1 when a part failed or hit its cap.
set -uo pipefail
PY=${PY:-.venv/bin/python}
REPORT=${1:-outputs/gpu-check.md}
PARTS=${PARTS:-tests bench}
case " $PARTS " in *" tests "*|*" bench "*) ;; *) echo "PARTS must name tests, bench or both; got '$PARTS'" >&2; exit 2;; esac
export HF_HUB_OFFLINE=1 MVSK_FLAGS=slow MVSK_TEST_DEVICE=cuda
mkdir -p "$(dirname "$REPORT")"
FAILED=$(mktemp)                                   # one line per part that failed or hit its cap (read after the report)
part() { local cap=$1 name=$2; shift 2; echo; echo "## $name"; echo '```'; timeout "$cap" "$@" 2>&1 | grep -v "it/s\]$" | tail -40;
         local rc=${PIPESTATUS[0]}; echo '```'; [ "$rc" = 124 ] && echo "(stopped at its cap of $cap s)";
         [ "$rc" = 0 ] || echo "$name (exit $rc)" >> "$FAILED"; return 0; }
{
  echo "# mvsk GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, diffusers, transformers; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__)"
  [[ " $PARTS " == *" tests "* ]] && part 180 "tests on CUDA" $PY -m pytest -p no:xdist -q -p no:cacheprovider tests/test_device.py tests/test_sd2_size.py
  [[ " $PARTS " == *" bench "* ]] || exit 0
  part 100 "one object's sk_step at StableKeypoints' settings, SD2-size UNet and VAE: peak memory" \
    $PY bench/sk_memory.py --config sd2 --device cuda --dtypes float16 bfloat16 float32 --maps default --steps 2
  part 120 "keypoint pass, map-capture overhead and its floor, SD2, bfloat16" \
    $PY bench/sk_pass.py --configs sd2 --device cuda --dtype bfloat16 --repeats 3
  part 50 "generation per strategy, SD2-size UNet (random weights), bfloat16" \
    $PY bench/generate.py --configs sd2 --device cuda --dtype bfloat16 --repeats 3
  part 60 "the mini model's training step (batch 8), fp32, 64 px and 128 px views" $PY bench/mini_step.py --device cuda --repeats 10 --view-sizes 64 128
} 2>&1 | tee "$REPORT"
if [ -s "$FAILED" ]; then echo "failed parts (the report has their output):" >&2; cat "$FAILED" >&2; rm -f "$FAILED"; exit 1; fi
rm -f "$FAILED"
