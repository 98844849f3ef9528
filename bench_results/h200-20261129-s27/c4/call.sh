#!/usr/bin/env bash
# Session 27, call 4: the 4-warp tensor-core short layout (LAB_GPU_ATTN_MMA=1) against the defaults with the matvec
# tiles pinned to the last bench row's (c6 of session 26: qkv w8.u1.r2, o_proj w8.u1.r4.b, lm_head ring.c8.s8.k512),
# so that only attention differs; 3 rounds at 512 and 2048.
set -u
N=dist/gpu_bundle.tar.xz
T=LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4.b,lm_head=ring.c8.s8.k512
timeout 400 tools/gpu_ab.sh --rounds 3 --contexts 512,2048 mma4=$N:LAB_GPU_ATTN_MMA=1,$T base=$N:$T 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
