#!/usr/bin/env bash
# For session 24's first device call (written in session 23): the full bench row of HEAD (cf0a8bf or later)
# with hf_compile's static cache sized for each point (HFRunner.fit): the first full row against the fairly
# sized peer. hf_compile now compiles once per cache size (3; greedy and logits share them), where it compiled
# twice before, so the run takes about 40 s longer than session 23's 356-429 s: give it the whole call. Leaves the bundle in /tmp/new_bundle.tar.xz and the model in
# /tmp/lab_models for the next calls. Carry dist/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
cp dist/gpu_bundle.tar.xz /tmp/new_bundle.tar.xz
R=$OUT/r; mkdir -p $R
el bench; (cd $B && LAB_GPU_VERBOSE=1 OUT=$R timeout 580 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -E "gpu_opt.*decode @ (512|2048) \||hf_compile.*decode @ (128|512|2048) \|" $R/bench/bench.md | cut -c1-220
grep -E "hf_compile.*decode \(greedy\)" $R/bench.log | cut -c60-200
el done
