#!/usr/bin/env bash
# Session 26, call 5: the GPU suite of fcc49c8's bundle, then its defaults against session 25's d2448cf (that
# commit's cuda/ and py/tests built in this tree: a regression check of attention's merge as a shared function and
# qkv's x_copy branch), and LAB_GPU_O_HEAD=rows_all, with step traces at 512.
set -u
N=dist/b_head.tar.xz
timeout 570 tools/gpu_ab.sh --suite --rounds 3 --trace 512 new=$N old=dist/b_old.tar.xz rows_all=$N:LAB_GPU_O_HEAD=rows_all \
  2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
