#!/usr/bin/env bash
# Session 28, call 2: the bench row of afb8cf3's bundle (the spread steps' tiles tuned apart, the default), hf_compile
# and the ceilings in the same run.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
el bench; (cd $B && OUT=$R timeout 540 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -E "gpu_opt.*decode @ (128|512|2048)|hf_compile.*decode @ (128|512|2048)" $R/bench/bench.md | cut -c1-260
el done
