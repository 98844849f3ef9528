#!/usr/bin/env bash
# For session 26's first device call (written in session 25): the GPU suite of HEAD's bundle, whose new test
# (test_gpu_opt_mlp_auto_falls_back_where_the_copy_does_not_fit: auto plans W_down's second copy last and runs
# split where the card cannot hold it) has not run on a card; then the defaults against split in alternating
# processes with step traces at 512 (the peer: session 25's c3-ab/c5 rows). Carry dist/gpu_bundle.tar.xz and
# this script.
set -u
N=dist/gpu_bundle.tar.xz
grep -a commit <(tar -xJOf $N gpu_bundle/BUILD_INFO)
timeout 560 tools/gpu_ab.sh --suite --rounds 2 --trace 512 auto=$N split=$N:LAB_GPU_MLP=split \
  2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
