#!/usr/bin/env bash
# For session 21's first device call (written in session 20): handoff_latency's kBig row (not yet run), the
# lab probes' GPU tests, then the GPU suite and an A/B of HEAD's tuner (pair step + playoff) against the hand
# tiles and 2262135 (session 20's first bench row, the old one-pass tuner). About 250 s.
# Carry dist/gpu_bundle.tar.xz, dist/s19head/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
el handoff; for k in 4096 14336; do timeout 60 $B/tools/handoff_latency $k 40; done > $R/handoff.log 2>&1; grep -A7 "engine-like" $R/handoff.log
el probes; (cd $B && OUT=$R timeout 120 ./run.sh test -m gpu -k lab_probes > /dev/null 2>&1); tail -1 $R/pytest.log; cp $R/pytest.log $R/probes_pytest.log
H="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c16.s16.k256,lm_head=ring.c8.s16.k256"
el ab; timeout 330 tools/gpu_ab.sh --suite --rounds 2 new=dist/gpu_bundle.tar.xz hand=dist/gpu_bundle.tar.xz:$H old=dist/s19head/gpu_bundle.tar.xz 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|passed|failed|bundle" | cut -c1-200
mkdir -p /tmp/x && rm -rf /tmp/x/* && tar -C /tmp/x -xzf $OUT/ab.tgz && for f in /tmp/x/v/new*.log; do echo "== $f"; grep -A5 "graph tune" $f | cut -c1-200; done
el done
tar -C $OUT -czf $OUT/r.tgz r
