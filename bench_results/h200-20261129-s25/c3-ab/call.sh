#!/usr/bin/env bash
# Session 25's third device call: the suite of the bundle with LAB_GPU_MLP=auto as the default (fused where it
# can run) and qkv's fp32 x by one bulk copy behind the fused MLP (XB 3); then, in alternating processes: the
# defaults, fused with qkv staging x by the loop (LAB_GPU_X_BULK=gate_up: session 24's fused), and split; step
# traces at 512. Carry dist/gpu_bundle.tar.xz and this script.
set -u
N=dist/gpu_bundle.tar.xz
grep -a commit <(tar -xJOf $N gpu_bundle/BUILD_INFO)
timeout 560 tools/gpu_ab.sh --suite --rounds 2 --trace 512 auto=$N loop=$N:LAB_GPU_X_BULK=gate_up split=$N:LAB_GPU_MLP=split \
  2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
