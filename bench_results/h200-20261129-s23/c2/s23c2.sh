#!/usr/bin/env bash
# For session 23's second device call: the GPU suite of HEAD, an A/B against f750df3 (session 22's bench row)
# with the bench's tiles pinned as a control, and x by one bulk copy in qkv's register tile too
# (LAB_GPU_X_BULK=all; the ring tiles have no such kernel: measured slower in session 14 while the tile loaded
# norm weights after the wait; with the fold it stages x alone), step traces of each at 512 (gpu_ab.sh --trace).
# About 230 s.
# Carry dist/gpu_bundle.tar.xz, dist/s22base/gpu_bundle.tar.xz and this script.
set -u
P="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b,lm_head=ring.c8.s16.k256"
N=dist/gpu_bundle.tar.xz; O=dist/s22base/gpu_bundle.tar.xz
timeout 560 tools/gpu_ab.sh --suite --rounds 2 --trace 512 new=$N base=$O new_p=$N:$P xb_all=$N:$P,LAB_GPU_X_BULK=all 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
