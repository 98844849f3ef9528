#!/usr/bin/env bash
# Session 27, call 3: the GPU suite of the bundle (e72ac3c's code: the split merge now a function shared by v2 and v4),
# then 4 more rounds at 512 only of the two tensor-core forms against the defaults.
set -u
N=dist/gpu_bundle.tar.xz
rm -rf /tmp/b3 && mkdir -p /tmp/b3 && tar -C /tmp/b3 -xJf $N
grep -a commit /tmp/b3/gpu_bundle/BUILD_INFO
(cd /tmp/b3/gpu_bundle && timeout 300 ./run.sh test -m gpu 2>&1 | tail -8)
timeout 280 tools/gpu_ab.sh --rounds 4 --contexts 512 mma8=$N:LAB_GPU_ATTN_MMA=8 mma4=$N:LAB_GPU_ATTN_MMA=1 base=$N 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
