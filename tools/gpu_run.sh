#!/usr/bin/env bash
# Entry script of the GPU bundle (tools/gpu_bundle.sh): runs on any GPU host with Python, torch and
# transformers, without Bazel. One step or several, in order; each logs under $OUT (default /tmp/lab_out).
#
#   ./run.sh check                 the card, the module, the engines
#   ./run.sh test [pytest args]    the whole suite (GPU tests included)
#   ./run.sh model                 the Llama-3.1-8B-shaped random fp16 model ($LAB_MODEL8B)
#   ./run.sh bench [bench args]    stages 3-4 + peers on that model, made if missing (the bench tool; args replace the defaults)
#   ./run.sh kernels               the kernel labs: decode matvec versions, prefill GEMM/attention
#   ./run.sh ncu                   one gpu_opt decode step under Nsight Compute, as a table
#   ./run.sh all                   check test model bench kernels ncu
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
OUT="${OUT:-/tmp/lab_out}"
MODEL8B="${LAB_MODEL8B:-/tmp/lab_models/synthetic-llama-3.1-8b_fp16}"
mkdir -p "$OUT"
if ls "$HERE"/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/lab_site "$HERE"/wheels/*.whl >/dev/null \
    && export PYTHONPATH="$PYTHONPATH:/tmp/lab_site"
fi
t0=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - t0 )) s] $*"; }
status=0

check() {
  cat "$HERE/BUILD_INFO"
  nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv \
    || { echo "no NVIDIA GPU visible" >&2; return 1; }
  "$PY" -c "import lab._engine as e, torch; print('engines:', e.engine_names()); print('torch', torch.__version__, torch.cuda.get_device_name(0))"
}
run_tests() { (cd "$HERE/tests" && "$PY" -m pytest -q -rfEs -p no:cacheprovider "$@" . 2>&1 | tee "$OUT/pytest.log"); }
model() {
  [ -f "$MODEL8B/model.bin" ] || "$PY" "$HERE/tools/synthetic.py" --arch llama-3.1-8b --precision fp16 \
    --model_dir "$MODEL8B" --tokenizer_dir "$MODEL8B.tokenizer" 2>&1 | tail -3
}
bench() {
  if [ $# -eq 0 ]; then  # the defaults' model, made first where it is missing (a fresh host has none)
    model || return 1
    set -- --model_dir "$MODEL8B" --engines gpu_opt --peers hf_eager,hf_compile --device cuda \
      --prompt_lengths 128,1024 --contexts 128,512,2048 --decode_tokens 64 --repeats 5 --decode_modes greedy,logits \
      --out_dir "$OUT/bench"
  fi
  "$PY" "$HERE/tools/bench.py" "$@"
}
kernels() {  # fails if either lab's bench fails (its error is the last line of its log)
  local rc=0
  if [ -x "$HERE/tools/kernel_bench" ]; then
    "$HERE/tools/kernel_bench" --out "$OUT/kernels" --model_dir "$MODEL8B" --ctx 512,2048 > "$OUT/kernel_bench.log" 2>&1 || rc=1
    tail -30 "$OUT/kernel_bench.log"
  fi
  if [ -f "$HERE/tools/bench_prefill.py" ]; then
    "$PY" "$HERE/tools/bench_prefill.py" --bench "$HERE/tools/prefill_bench" --out "$OUT/prefill" \
      > "$OUT/prefill_bench.log" 2>&1 || rc=1
    tail -30 "$OUT/prefill_bench.log"
  fi
  return $rc
}
ncu_step() { "$HERE/tools/ncu_decode.sh" "$MODEL8B" 512 gpu_opt "$OUT/ncu" > "$OUT/ncu.log" 2>&1; tail -16 "$OUT/ncu.log"; }

step="${1:-all}"; shift || true
case "$step" in
  check) check ;;
  test) run_tests "$@" ;;
  model) model ;;
  bench) bench "$@" ;;
  kernels) kernels ;;
  ncu) ncu_step ;;
  all)
    for s in check test model bench kernels ncu_step; do
      stamp "$s"
      case "$s" in test) run_tests || status=1 ;; *) "$s" || status=1 ;; esac
    done ;;
  *) echo "usage: run.sh check|test|model|bench|kernels|ncu|all [args]" >&2; exit 2 ;;
esac
rc=$?
stamp "done"
[ "$status" = 0 ] && exit "$rc" || exit "$status"
