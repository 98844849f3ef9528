#!/usr/bin/env bash
# Session 27, call 2: the tensor-core short layout in two forms, 4 warps over 64-key splits (LAB_GPU_ATTN_MMA=1) and
# 8 warps over 128-key splits (=8: half the partials to merge), their tests and the knobs' refusals first (time
# limit), then A/B against the defaults of the same bundle, 3 rounds, step traces at 512.
set -u
N=dist/gpu_bundle.tar.xz
rm -rf /tmp/b2 && mkdir -p /tmp/b2 && tar -C /tmp/b2 -xJf $N
(cd /tmp/b2/gpu_bundle && timeout 240 ./run.sh test -m gpu -k "mma or refused" -s 2>&1 | grep -E "relative error|passed|failed|Error|error" | tail -40)
mv $OUT/pytest.log $OUT/pytest_mma.log
if grep -qE " failed|[0-9]+ error" $OUT/pytest_mma.log || ! grep -q " passed" $OUT/pytest_mma.log; then
  echo "tests did not pass; no A/B"; tail -60 $OUT/pytest_mma.log; exit 1
fi
timeout 480 tools/gpu_ab.sh --rounds 3 --trace 512 mma8=$N:LAB_GPU_ATTN_MMA=8 mma4=$N:LAB_GPU_ATTN_MMA=1 base=$N 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
