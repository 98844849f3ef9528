#!/usr/bin/env bash
# Session 20, call 8: the tuner with the pair step (new) against the tuner with the playoff only (play, 4e6e0b6)
# and the hand-pinned tiles, 2 rounds.
set -u
H="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c16.s16.k256,lm_head=ring.c8.s16.k256"
timeout 200 tools/gpu_ab.sh --rounds 2 new=dist/gpu_bundle.tar.xz play=dist/s20play/gpu_bundle.tar.xz hand=dist/gpu_bundle.tar.xz:$H 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|bundle" | cut -c1-200
mkdir -p /tmp/x && rm -rf /tmp/x/* && tar -C /tmp/x -xzf $OUT/ab.tgz && for f in /tmp/x/v/new*.log /tmp/x/v/play*.log; do echo "== $f"; grep -E "pass [0-9] |graph tune" $f | tail -4 | cut -c1-200; grep -A4 "graph tune" $f | tail -4 | cut -c1-150; done
