#!/usr/bin/env bash
# Session 23, call 6: a step trace of f13995e's defaults at context 512 (where the step's time past its bytes
# goes now), with one round of its A/B row. Carry dist/gpu_bundle.tar.xz and this script. About 80 s.
set -u
timeout 280 tools/gpu_ab.sh --rounds 1 --trace 512 new=dist/gpu_bundle.tar.xz 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-220
