#!/usr/bin/env bash
# Session 20, call 4: the new graph tuner (repeated passes, largest kind first). GPU suite of the new bundle,
# then tuned-new vs tuned-old (2262135, this session's bench row) vs new with the hand-pinned tiles.
set -u
T="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c16.s16.k256,lm_head=ring.c8.s16.k256"
timeout 560 tools/gpu_ab.sh --suite --rounds 2 new=dist/gpu_bundle.tar.xz old=dist/s19head/gpu_bundle.tar.xz pinned=dist/gpu_bundle.tar.xz:$T 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|passed|failed|bundle" | cut -c1-200
mkdir -p /tmp/x && rm -rf /tmp/x/* && tar -C /tmp/x -xzf $OUT/ab.tgz && for f in /tmp/x/v/new*.log /tmp/x/v/old.log; do echo "== $f"; grep -E "graph tune|pass [0-9]|keeps" $f | cut -c1-260; done
