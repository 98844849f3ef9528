#!/usr/bin/env bash
# Session 21, call 8: HEAD with the spread attention layout on by default. The GPU suite, then an A/B with the
# bench's tiles pinned at 512, 1536 and 2048 (HEAD, whose suite runs; c9bf9c7, the benched bundle; HEAD with LAB_GPU_ATTN_SPREAD=0),
# two rounds; then the full bench (run.sh bench, the tuner verbose), in what time is left.
# Carry dist/gpu_bundle.tar.xz, dist/s21base/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
P="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b,lm_head=ring.c8.s8.k512"
el ab; timeout 200 tools/gpu_ab.sh --suite --rounds 2 --contexts 512,1536,2048 new=dist/gpu_bundle.tar.xz:$P base=dist/s21base/gpu_bundle.tar.xz:$P two=dist/gpu_bundle.tar.xz:$P,LAB_GPU_ATTN_SPREAD=0 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|bundle|passed|failed" | cut -c1-220
left=$(( 575 - ($(date +%s) - T0) ))
el "bench (timeout $left s)"; (cd $B && LAB_GPU_VERBOSE=1 OUT=$R timeout $left ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -A5 "graph tune" $R/bench.log | cut -c1-200; grep -E "gpu_opt.*decode @ (512|2048) \||hf_compile.*decode @ 512 \|" $R/bench/bench.md | cut -c1-240; grep -E "NVIDIA H200: read" $R/bench/bench.md | cut -c1-80
el done
