#!/usr/bin/env bash
# Session 28, call 7 (the same bundle, zero code): step traces at 2048 of the defaults and of o_proj on the ring tile in
# every step (LAB_GPU_TILES=o_proj=ring.c8.s16.k256, -1.0% at 2048 in c6): whether attention's time moves there too.
set -u
N=dist/gpu_bundle.tar.xz
timeout 300 tools/gpu_ab.sh --rounds 1 --contexts 2048 --trace 2048 base=$N oring=$N:LAB_GPU_TILES=o_proj=ring.c8.s16.k256 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-240
