#!/usr/bin/env bash
# Session 20, call 6: do the tuner's near-equal tile sets differ in greedy tok/s? Three pinned sets alternating:
# hand (the A/B set since session 17), bench (what call 5's bench process picked), abtuned (what call 4's two
# tuned processes picked).
set -u
H="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c16.s16.k256,lm_head=ring.c8.s16.k256"
BN="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c16.s16.k256,down=w8.u1.r4,lm_head=ring.c8.s16.k256"
AT="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b,lm_head=ring.c8.s8.k512"
timeout 400 tools/gpu_ab.sh --rounds 2 hand=dist/gpu_bundle.tar.xz:$H bench=dist/gpu_bundle.tar.xz:$BN abtuned=dist/gpu_bundle.tar.xz:$AT 2>&1 | grep -E "^[a-z0-9_]+: rc|Card" | cut -c1-200
