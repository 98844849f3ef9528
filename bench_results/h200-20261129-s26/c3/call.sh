#!/usr/bin/env bash
# Session 26, call 3: o_proj by heads lost 2.8% in call 2 (its blocks packed two to an SM on 28 SMs: the trace's
# "SMs 100"); its grid and blocks per SM as knobs, against the defaults, with traces.
set -u
N=dist/b_ohead2.tar.xz
grep -a commit <(tar -xJOf $N gpu_bundle/BUILD_INFO)
timeout 560 tools/gpu_ab.sh --rounds 2 --trace 512 auto=$N head=$N:LAB_GPU_O_HEAD=1 \
  h16s=$N:LAB_GPU_O_HEAD=1,LAB_GPU_O_HEAD_SMEM=100 h33=$N:LAB_GPU_O_HEAD=1,LAB_GPU_O_HEAD_GRID=33 \
  h33s=$N:LAB_GPU_O_HEAD=1,LAB_GPU_O_HEAD_GRID=33,LAB_GPU_O_HEAD_SMEM=90 \
  2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
