#!/usr/bin/env bash
# For session 20's first device call (written in session 19): the bench row of HEAD (run.sh model + bench,
# hf_compile and the ceiling in the same run), after the lab probes' GPU tests (handoff_latency's has not
# run on a card) and a pinned A/B against session 18's benched engine as the peer.
# Carry dist/gpu_bundle.tar.xz, dist/s18base/gpu_bundle.tar.xz and this script (about 55 MB with the tree).
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
el handoff; for k in 4096 7168 14336; do timeout 60 $B/tools/handoff_latency $k 40; done > $R/handoff.log 2>&1; grep -A6 "engine-like" $R/handoff.log
el probes; (cd $B && OUT=$R timeout 120 ./run.sh test -m gpu -k lab_probes > /dev/null 2>&1); tail -1 $R/pytest.log; cp $R/pytest.log $R/probes_pytest.log
T="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c16.s16.k256,lm_head=ring.c8.s16.k256"
el ab; timeout 200 tools/gpu_ab.sh --rounds 2 new=dist/gpu_bundle.tar.xz:$T old=dist/s18base/gpu_bundle.tar.xz:$T 2>&1 | grep -E "^[a-z0-9_]+: rc|Card" | cut -c1-160

el done
tar -C $OUT -czf $OUT/r.tgz r
