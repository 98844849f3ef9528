#!/usr/bin/env bash
# Session 27, call 8: the new default (tensor-core short layout) with the graph tuner at its default position (1024),
# tuned at 512 (LAB_GPU_TUNE_POS=512), and with qkv and o_proj pinned to the last row's tiles: does the tuner's pick
# (qkv w8.u1.r4.b in c1, c2 and c7 with the mma, w8.u1.r2 without) cost the 512 point?
set -u
N=dist/gpu_bundle.tar.xz
timeout 300 tools/gpu_ab.sh --rounds 2 --contexts 512,2048 tuned=$N pos512=$N:LAB_GPU_TUNE_POS=512 \
  pinned=$N:LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4.b 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
