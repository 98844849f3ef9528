#!/usr/bin/env bash
# Session 26, call 4: LAB_GPU_O_HEAD=rows (ORowsKernel) checked first (o_head tests, time-limited), then A/B against
# the defaults and cols (call 3's best knobs), with traces at 512.
set -u
N=dist/b_rows.tar.xz
mkdir -p /tmp/b4 && tar -C /tmp/b4 -xJf $N
(cd /tmp/b4/gpu_bundle && timeout 240 ./run.sh test -m gpu -k "ohead or mlp" 2>&1 | tail -25)
mv $OUT/pytest.log $OUT/pytest_ohead.log
if grep -qE " failed| error" $OUT/pytest_ohead.log || ! grep -q " passed" $OUT/pytest_ohead.log; then
  echo "tests did not pass; no A/B"; exit 1
fi
timeout 420 tools/gpu_ab.sh --rounds 2 --trace 512 auto=$N rows=$N:LAB_GPU_O_HEAD=rows \
  cols=$N:LAB_GPU_O_HEAD=cols,LAB_GPU_O_HEAD_GRID=33,LAB_GPU_O_HEAD_SMEM=90 \
  2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
