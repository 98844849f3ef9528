#!/usr/bin/env bash
# Session 20, call 2: the bench row of HEAD (run.sh bench: ceiling, hf eager, hf_compile, gpu_opt in one run).
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
B=/tmp/b/gpu_bundle
if [ ! -d $B ]; then rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; fi
grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
el bench; (cd $B && OUT=$R timeout 570 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"; tail -25 $R/bench.log
el done
