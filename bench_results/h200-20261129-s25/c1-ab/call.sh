#!/usr/bin/env bash
# For session 25's first device call (written in session 24): the fused MLP (LAB_GPU_MLP=fused) with the tuner
# free to choose qkv's, o_proj's and lm_head's tiles, against the split default tuned and the bench row's tiles
# pinned (split), in alternating processes; the GPU suite of the bundle first. Carry dist/gpu_bundle.tar.xz and
# this script. Step traces at 512 of each variant (the fused MLP as one kind, mlp: its marks' first run). Then, if fused still wins: `LAB_GPU_MLP=fused ./run.sh bench` for a row (about 370 s, a call).
set -u
T="qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c8.s16.k256,lm_head=ring.c8.s16.k256"
N=dist/gpu_bundle.tar.xz
grep -a commit <(tar -xJOf $N gpu_bundle/BUILD_INFO)
cp $N /tmp/new_bundle.tar.xz
timeout 560 tools/gpu_ab.sh --suite --rounds 2 --trace 512 fused=$N:LAB_GPU_MLP=fused split=$N pinned=$N:LAB_GPU_TILES=$T \
  2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
