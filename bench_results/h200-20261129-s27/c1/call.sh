#!/usr/bin/env bash
# Session 27, call 1: the short attention layout on the tensor cores (LAB_GPU_ATTN_MMA=1, AttentionMmaKernel)
# checked first (its tests and the attention knobs' refusals, with a time limit), then A/B against the defaults of
# the same bundle, with step traces at 512.
set -u
N=dist/gpu_bundle.tar.xz
mkdir -p /tmp/b1 && tar -C /tmp/b1 -xJf $N
(cd /tmp/b1/gpu_bundle && timeout 240 ./run.sh test -m gpu -k "mma or refused" -s 2>&1 | grep -E "relative error|passed|failed|Error|error" | tail -40)
mv $OUT/pytest.log $OUT/pytest_mma.log
if grep -qE " failed|[0-9]+ error" $OUT/pytest_mma.log || ! grep -q " passed" $OUT/pytest_mma.log; then
  echo "tests did not pass; no A/B"; tail -60 $OUT/pytest_mma.log; exit 1
fi
timeout 420 tools/gpu_ab.sh --rounds 2 --trace 512 mma=$N:LAB_GPU_ATTN_MMA=1 base=$N 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
