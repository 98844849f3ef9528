#!/usr/bin/env bash
# Entry script of the GPU bundle (tools/gpu_bundle.sh): runs on any GPU host with Python, torch and
# transformers, without Bazel.   ./run.sh check | test | bench | all   (extra args go to the step)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if [ -d "$HERE/wheels" ] && ls "$HERE"/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/lab_site "$HERE"/wheels/*.whl >/dev/null
  export PYTHONPATH="$PYTHONPATH:/tmp/lab_site"
fi
step="${1:-all}"; shift || true
check() {
  cat "$HERE/BUILD_INFO"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU visible" >&2; exit 1; }
  "$PY" -c "import lab._engine as e, torch; print('engines:', e.engine_names()); print('torch', torch.__version__, torch.cuda.get_device_name(0))"
}
run_tests() { (cd "$HERE/tests" && "$PY" -m pytest -q -rs -p no:cacheprovider "$@" .); }
bench() { "$PY" "$HERE/tools/bench.py" "$@"; }
case "$step" in
  check) check ;;
  test) run_tests "$@" ;;
  bench) bench "$@" ;;
  all) check && run_tests && bench "$@" ;;
  *) echo "usage: run.sh check|test|bench|all [args]" >&2; exit 2 ;;
esac
