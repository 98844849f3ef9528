#!/usr/bin/env bash
# Session 27, call 9: the default as committed (LAB_GPU_ATTN_MMA=auto: the tensor cores for the spread layout's steps
# only, the CUDA-core kernel for the other short steps, so the graph tuner at 1,024 sees the step it saw before):
# its attention tests first (time limit), then the bench row (hf_compile and the ceiling in the same run).
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
(cd $B && timeout 60 ./run.sh test -m gpu -k "mma or refused" 2>&1 | tail -2)
if grep -qE " failed|[0-9]+ error" $OUT/pytest.log || ! grep -q " passed" $OUT/pytest.log; then echo "tests did not pass; no bench"; exit 1; fi
R=$OUT/r; mkdir -p $R
el bench; (cd $B && OUT=$R timeout 390 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -E "gpu_opt.*decode @ (128|512|2048)|hf_compile.*decode @ (128|512|2048)" $R/bench/bench.md | cut -c1-220
el done
