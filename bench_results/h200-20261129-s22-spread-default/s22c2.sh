#!/usr/bin/env bash
# For session 22's second device call: the full bench row of HEAD (run.sh bench; the tuner verbose). Session 21's
# try ran out of device time inside hf_eager's runner (that host's eager runs were 3x slower than usual); give it
# the whole call. Carry dist/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
B=/tmp/b/gpu_bundle
if [ ! -d $B ]; then rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; fi
grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
el bench; (cd $B && LAB_GPU_VERBOSE=1 OUT=$R timeout 580 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -A5 "graph tune" $R/bench.log | cut -c1-200; grep -E "gpu_opt.*decode @ (512|2048) \||hf_compile.*decode @ 512 \|" $R/bench/bench.md | cut -c1-220
el done
