#!/usr/bin/env bash
# Session 28, call 6 (zero code, the same bundle): after c5's trace (o_proj on a ring tile in the spread steps shortened
# attention), o_proj on that ring tile in every step (LAB_GPU_TILES=o_proj=ring.c8.s16.k256: also the short layout's
# steps, 2048), and the rings' producers issuing 4 stages before the PDL wait instead of the whole ring
# (LAB_GPU_RING_PRE=4: less loaded during attention); 2 rounds at 512 and 2048 against the defaults.
set -u
N=dist/gpu_bundle.tar.xz
timeout 300 tools/gpu_ab.sh --rounds 2 --contexts 512,2048 base=$N oring=$N:LAB_GPU_TILES=o_proj=ring.c8.s16.k256 pre4=$N:LAB_GPU_RING_PRE=4 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-240
