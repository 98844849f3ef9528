#!/usr/bin/env bash
# Session 20, call 7: the tuner with its playoff. Tuned processes vs the hand-pinned tiles (2 rounds), then a
# bench.py run of gpu_opt (tuned in the bench's own process, verbose) against hf_compile and the ceiling.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
H="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=ring.c16.s16.k256,lm_head=ring.c8.s16.k256"
el ab; timeout 200 tools/gpu_ab.sh --rounds 2 new=dist/gpu_bundle.tar.xz hand=dist/gpu_bundle.tar.xz:$H 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|bundle" | cut -c1-200
mkdir -p /tmp/x && rm -rf /tmp/x/* && tar -C /tmp/x -xzf $OUT/ab.tgz && for f in /tmp/x/v/new*.log; do echo "== $f"; grep -A5 "graph tune" $f | cut -c1-250; done
B=/tmp/gpu_ab/b1/gpu_bundle; R=$OUT/r; mkdir -p $R
el bench; (cd $B && LAB_GPU_VERBOSE=1 OUT=$R timeout 330 ./run.sh bench --model_dir /tmp/lab_models/synthetic-llama-3.1-8b_fp16 \
  --engines gpu_opt --peers hf_compile --device cuda --prompt_lengths 128 --contexts 512,2048 --decode_tokens 64 --repeats 5 \
  --decode_modes greedy --out_dir $R/bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -A5 "graph tune" $R/bench.log | cut -c1-250; grep -E "^\| NVIDIA" $R/bench/bench.md | cut -c1-260; grep -E "NVIDIA H200: read" $R/bench/bench.md | cut -c1-200
el done
