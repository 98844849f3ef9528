#!/usr/bin/env bash
# Session 28, call 5: step traces at 512 of the spread steps' own tiles (the default) and of one search
# (LAB_GPU_TUNE_SPREAD_POS=0), one more A/B round of each: where the step's time moved.
set -u
N=dist/gpu_bundle.tar.xz
timeout 300 tools/gpu_ab.sh --rounds 1 --contexts 512,2048 --trace 512 spread=$N one=$N:LAB_GPU_TUNE_SPREAD_POS=0 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-240
