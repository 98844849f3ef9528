#!/usr/bin/env bash
# Builds the CUDA work's GPU bundle into dist/cuda_bundle (same layout as tools/gpu_bundle.sh: lab/ with
# _engine.so for Python 3.12, tests/, tools/kernel_bench, BUILD_INFO) from a private Bazel output base,
# so that builds of other targets in the shared tree (other --//tools:target_python settings) cannot
# swap _engine.so underneath it.   cuda/tools/make_bundle.sh [--cuda_archs sm_90a]
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCHS="${2:-sm_90a}"
OUT=dist/cuda_bundle
PREFIX=/tmp/cuda_bundle_bazel-
bazel --output_base="${LAB_CUDA_OUTPUT_BASE:-$HOME/.cache/bazel_cuda_helper}" build --symlink_prefix="$PREFIX" \
  --//tools:target_python=3.12 --//tools:cuda_archs="$ARCHS" //py/lab:_engine.so //cuda:kernel_bench
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp/lab" "$OUT.tmp/tests" "$OUT.tmp/tools"
cp py/lab/*.py "$OUT.tmp/lab/"
cp "${PREFIX}bin/py/lab/_engine.so" "$OUT.tmp/lab/_engine.so"
cp py/tests/*.py "$OUT.tmp/tests/"
cp "${PREFIX}bin/cuda/kernel_bench" "$OUT.tmp/tools/"
chmod -R u+w "$OUT.tmp"
printf 'python=3.12\ncuda_archs=%s\ncommit=%s (+ working tree)\nbuilt=%s\n' "$ARCHS" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(date -u +%FT%TZ)" > "$OUT.tmp/BUILD_INFO"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
du -sh "$OUT"
