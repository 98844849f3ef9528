#!/usr/bin/env bash
# Session 23, call 4: the ring's copy for the residual matvecs only (gate_up keeps its staging), X_BULK=all
# the default. The GPU suite; an A/B of the defaults (tuned) against the bench's tiles pinned with the old
# default (X_BULK=resid: 13c1361's processes), pinned with the new one, and pinned with down on a ring tile.
# Carry dist/gpu_bundle.tar.xz and this script. About 190 s.
set -u
T="qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b,lm_head=ring.c8.s16.k256"
TD="qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c16.s16.k256,lm_head=ring.c8.s16.k256"
N=dist/gpu_bundle.tar.xz
timeout 560 tools/gpu_ab.sh --suite --rounds 2 new=$N old_p=$N:LAB_GPU_TILES=$T,LAB_GPU_X_BULK=resid \
  new_p=$N:LAB_GPU_TILES=$T new_pd=$N:LAB_GPU_TILES=$TD 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
