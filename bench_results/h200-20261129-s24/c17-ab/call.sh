#!/usr/bin/env bash
# Session 24, call 18: the GPU suite of 2bfb964 (LAB_GPU_MLP=fused with its launch fixed, and its tests; the
# bundle listed first, whose suite gpu_ab.sh runs), then an A/B in alternating processes: 2bfb964 split and
# 167129e's bundle (the last bench row's), both on the bench row's tiles pinned, against 2bfb964 with the
# fused MLP (the same qkv, o_proj and lm_head tiles). Carry dist/gpu_bundle.tar.xz,
# dist/s24/old_bundle_167129e.tar.xz and this script.
set -u
T="qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c8.s16.k256,lm_head=ring.c8.s16.k256"
N=dist/gpu_bundle.tar.xz
O=dist/s24/old_bundle_167129e.tar.xz
timeout 420 tools/gpu_ab.sh --suite --rounds 2 split=$N:LAB_GPU_TILES=$T old=$O:LAB_GPU_TILES=$T \
  fused=$N:LAB_GPU_TILES=$T,LAB_GPU_MLP=fused 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
