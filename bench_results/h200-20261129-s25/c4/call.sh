#!/usr/bin/env bash
# Session 25's fourth device call: the GPU suite (not SmolLM2's) of the bundle with LAB_GPU_MLP=auto as the
# default, after c3's two failures (bitwise checks that now pin split; weight_copy_bytes). Carry
# dist/gpu_bundle.tar.xz and this script.
set -u
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
(cd $B && OUT=$OUT timeout 300 ./run.sh test -m gpu -k "not smollm2" > /dev/null 2>&1)
grep -E "^(FAILED|ERROR)|passed|failed" $OUT/pytest.log | tail -12
