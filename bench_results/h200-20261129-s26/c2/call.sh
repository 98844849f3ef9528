#!/usr/bin/env bash
# Session 26, call 2: LAB_GPU_O_HEAD=1 (bundle of 9f0f001's code) checked first (its tests and the fused MLP's, with
# a time limit: a per-head wait that never ends must not eat the call), then A/B against the defaults with traces.
set -u
N=dist/b_ohead.tar.xz
mkdir -p /tmp/b2 && tar -C /tmp/b2 -xJf $N
(cd /tmp/b2/gpu_bundle && timeout 240 ./run.sh test -m gpu -k "ohead or mlp" 2>&1 | tail -25)
mv $OUT/pytest.log $OUT/pytest_ohead.log
if grep -qE " failed| error" $OUT/pytest_ohead.log || ! grep -q " passed" $OUT/pytest_ohead.log; then
  echo "tests did not pass; no A/B"; exit 1
fi
timeout 400 tools/gpu_ab.sh --rounds 2 --trace 512 head=$N:LAB_GPU_O_HEAD=1 auto=$N 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
