#!/usr/bin/env bash
# Session 27, call 7: the bench row of the tensor-core short attention layout as the default (LAB_GPU_ATTN_MMA=auto),
# the fair peer (hf_compile) and the ceiling in the same run. Carry dist/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
el bench; (cd $B && OUT=$R timeout 560 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -E "gpu_opt.*decode @ (128|512|2048)|hf_compile.*decode @ (128|512|2048)" $R/bench/bench.md | cut -c1-220
el done
