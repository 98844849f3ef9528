#!/usr/bin/env bash
# One device call of the CUDA work: correctness first, then timings, everything logged under $OUT.
#   cuda/tools/device_session.sh [steps...]   steps: info test model bench ncu (default: all, in order)
# Runs from the repository root on the GPU machine with the bundle carried in dist/gpu_bundle.
set -uo pipefail
OUT="${OUT:-/tmp/lab_out}"
mkdir -p "$OUT"
B="$(pwd)/${BUNDLE:-dist/gpu_bundle}"
export PYTHONPATH="$B${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
MODEL=/tmp/m8b
steps="${*:-info test model bench ncu}"
t0=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - t0 ))s] $*"; }
for s in $steps; do
  case "$s" in
    info)
      stamp info
      cat "$B/BUILD_INFO"
      nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv
      python3 -c "import lab._engine as e; print('engines', e.engine_names())" ;;
    test)
      stamp pytest
      (cd "$B/tests" && timeout 300 python3 -m pytest -q -rs -p no:cacheprovider test_gpu_engines.py -s 2>&1 \
        | grep -v '^$' | tee "$OUT/pytest.log" | tail -40) ;;
    model)
      stamp model
      [ -f "$MODEL/model.bin" ] || timeout 240 python3 cuda/tools/make_random_model.py "$MODEL" 2>&1 | tail -3 ;;
    bench)
      stamp kernel_bench
      LAB_GPU_VERBOSE=1 timeout 300 "$B/tools/kernel_bench" --out "$OUT" --model "$MODEL" --ctx 512,2048 \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/kernel_bench.log" | grep -v '^  v[1-5] ' ;;
    ncu)
      stamp ncu
      timeout 240 tools/ncu_decode.sh "$MODEL" 512 gpu_opt "$OUT/ncu" > "$OUT/ncu.log" 2>&1
      tail -14 "$OUT/ncu.log"; rm -f "$OUT/ncu/ncu_driver.py" ;;
    *) echo "unknown step $s" ;;
  esac
done
stamp done
