#!/usr/bin/env bash
# Session 25's second device call: the full bench row with the fused MLP (LAB_GPU_MLP=fused, v14), the fair
# peer (hf_compile, static cache sized per point) and the ceiling in the same run. Carry dist/gpu_bundle.tar.xz
# and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
cp dist/gpu_bundle.tar.xz /tmp/new_bundle.tar.xz
R=$OUT/r; mkdir -p $R
el bench; (cd $B && LAB_GPU_MLP=fused LAB_GPU_VERBOSE=1 OUT=$R timeout 580 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -E "gpu_opt.*decode @ (512|2048) \||hf_compile.*decode @ (128|512|2048) \|" $R/bench/bench.md | cut -c1-220
grep -E "hf_compile.*decode \(greedy\)" $R/bench.log | cut -c60-200
el done
