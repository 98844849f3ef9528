#!/usr/bin/env bash
# Session 23, call 5: the bench row of f13995e (the ring copy for down and o_proj, X_BULK=all the default).
# (run.sh bench; it now makes the model first on a fresh host; the tuner verbose). Session 22's two tries were
# lost: one host had no model, the other ran out of device time inside hf_eager. Give it the whole call.
# Leaves the bundle in /tmp/new_bundle.tar.xz and the model in /tmp/lab_models for the next calls.
# Carry dist/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
cp dist/gpu_bundle.tar.xz /tmp/new_bundle.tar.xz
R=$OUT/r; mkdir -p $R
el bench; (cd $B && LAB_GPU_VERBOSE=1 OUT=$R timeout 570 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -A5 "graph tune" $R/bench.log | cut -c1-200; grep -E "gpu_opt.*decode @ (512|2048) \||hf_compile.*decode @ 512 \|" $R/bench/bench.md | cut -c1-220
el done
