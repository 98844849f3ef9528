#!/usr/bin/env bash
# Session 20, call 3: does the graph tuner pick the pinned (A/B-best) tiles? tuned processes vs pinned, 3 rounds.
set -u
T="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c16.s16.k256,lm_head=ring.c8.s16.k256"
timeout 400 tools/gpu_ab.sh --rounds 3 tuned=dist/gpu_bundle.tar.xz pinned=dist/gpu_bundle.tar.xz:$T 2>&1 | grep -E "^[a-z0-9_]+: rc|Card" | cut -c1-160
mkdir -p /tmp/x && tar -C /tmp/x -xzf $OUT/ab.tgz && for f in /tmp/x/v/tuned*.log; do echo "== $f"; grep -E "keeps|graph tune|best|variant" $f | cut -c1-330; done
