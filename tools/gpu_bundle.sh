#!/usr/bin/env bash
# Builds a self-contained GPU bundle on a workstation (no GPU, no Bazel needed where it runs):
#   dist/gpu_bundle/
#     lab/            the lab package with _engine.so built for the target Python (default 3.12)
#     tests/          the pytest suite (GPU tests marked `gpu`)
#     tools/          bench, inference, perplexity, kernel bench and their helpers
#     wheels/         pure-Python wheels the GPU host may lack (gguf), if present in .whl/
#     run.sh          check | test | bench | all  — the single entry script on the GPU host
# Usage: tools/gpu_bundle.sh [--python 3.12|host] [--cuda_archs sm_90a,sm_80]
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="3.12"
ARCHS="sm_90a"
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYVER="$2"; shift 2 ;;
    --cuda_archs) ARCHS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT=dist/gpu_bundle
bazel build --//tools:target_python="$PYVER" --//tools:cuda_archs="$ARCHS" //py/lab:_engine.so //cuda/...
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp/lab" "$OUT.tmp/tests" "$OUT.tmp/tools"
cp py/lab/*.py "$OUT.tmp/lab/"
cp bazel-bin/py/lab/_engine.so "$OUT.tmp/lab/_engine.so"
cp py/tests/*.py "$OUT.tmp/tests/"
cp py/tools/*.py "$OUT.tmp/tools/" 2>/dev/null || true
# Standalone CUDA programs (kernel benches) built by //cuda/...
find bazel-bin/cuda -maxdepth 3 -type f -perm -u+x ! -name '*.so' ! -name '*.params' ! -name '*.sh' \
  ! -path '*runfiles*' -exec cp {} "$OUT.tmp/tools/" \; 2>/dev/null || true
if [ -d .whl ]; then mkdir -p "$OUT.tmp/wheels" && cp .whl/*.whl "$OUT.tmp/wheels/" 2>/dev/null || true; fi
cp tools/gpu_run.sh "$OUT.tmp/run.sh"
chmod -R u+w "$OUT.tmp"
printf 'python=%s\ncuda_archs=%s\ncommit=%s\nbuilt=%s\n' "$PYVER" "$ARCHS" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(date -u +%FT%TZ)" > "$OUT.tmp/BUILD_INFO"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
du -sh "$OUT"
