#!/usr/bin/env bash
# Builds a self-contained GPU bundle on a workstation (no GPU, no Bazel needed where it runs):
#   dist/gpu_bundle/
#     lab/            the lab package with _engine.so built for the target Python (default 3.12)
#     tests/          the pytest suite (GPU tests marked `gpu`)
#     tools/          bench, inference, perplexity, kernel bench and their helpers
#     wheels/         pure-Python wheels the GPU host may lack (gguf), if present in .whl/
#     run.sh          check | test | model | bench | kernels | ncu | all — the entry script on the GPU host
#   and dist/gpu_bundle.tar.xz, the same folder packed for copying (a few MB).
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
# Bazel 4.2.3 keeps command-line build settings out of the output path, so a 3.12 build would
# overwrite the host's bazel-bin/py/lab/_engine.so: build the bundle in its own output base.
BZL=(bazel)
if [ "$PYVER" != host ]; then BZL=(bazel --output_base="${LAB_BUNDLE_OUTPUT_BASE:-$HOME/.cache/bazel-lab-bundle-py$PYVER}"); fi
"${BZL[@]}" build --symlink_prefix=/ --//tools:target_python="$PYVER" --//tools:cuda_archs="$ARCHS" \
  //py/lab:_engine.so //py/lab:_membw.so //py/lab:_prefill_kernels.so //cuda/...
BIN="$("${BZL[@]}" info --//tools:target_python="$PYVER" --//tools:cuda_archs="$ARCHS" bazel-bin 2>/dev/null)"
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp/lab" "$OUT.tmp/tests" "$OUT.tmp/tools"
cp py/lab/*.py "$OUT.tmp/lab/"
cp -r py/lab/bench "$OUT.tmp/lab/"
cp "$BIN/py/lab/_engine.so" "$BIN/py/lab/_membw.so" "$BIN/py/lab/_prefill_kernels.so" "$OUT.tmp/lab/"
cp py/tests/*.py "$OUT.tmp/tests/"
cp py/tools/*.py "$OUT.tmp/tools/" 2>/dev/null || true
# Standalone CUDA programs (kernel benches) built by //cuda/...
find "$BIN/cuda" -maxdepth 3 -type f -perm -u+x ! -name '*.*' ! -name '*_test' \
  ! -path '*runfiles*' -exec cp {} "$OUT.tmp/tools/" \; 2>/dev/null || true
if [ -d .whl ]; then mkdir -p "$OUT.tmp/wheels" && cp .whl/*.whl "$OUT.tmp/wheels/" 2>/dev/null || true; fi
cp tools/ncu_decode.sh tools/ncu_table.py "$OUT.tmp/tools/"
cp cuda/prefill/bench_prefill.py "$OUT.tmp/tools/" 2>/dev/null || true
cp tools/gpu_run.sh "$OUT.tmp/run.sh"
chmod -R u+w "$OUT.tmp"
printf 'python=%s\ncuda_archs=%s\ncommit=%s\nbuilt=%s\n' "$PYVER" "$ARCHS" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)" \
  "$(date -u +%FT%TZ)" > "$OUT.tmp/BUILD_INFO"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
tar -C "$(dirname "$OUT")" -cJf "$OUT.tar.xz.tmp" "$(basename "$OUT")" && mv "$OUT.tar.xz.tmp" "$OUT.tar.xz"
du -sh "$OUT" "$OUT.tar.xz"
