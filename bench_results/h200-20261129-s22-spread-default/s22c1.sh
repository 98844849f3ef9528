#!/usr/bin/env bash
# For session 22's first device call (written in session 21): the GPU suite of HEAD (the spread attention layout
# by default since a82421a, and the step trace's SM marks, not yet run on a card), step traces at 512 with the
# bench's tiles pinned, spread on and off (the new SMs column shows where attention's and o_proj's blocks ran),
# then an A/B of HEAD against c9bf9c7 (the last full bench row). About 250 s.
# Carry dist/gpu_bundle.tar.xz, dist/s21base/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
cp dist/gpu_bundle.tar.xz /tmp/new_bundle.tar.xz  # for SmolLM2's calls while the host stays warm
R=$OUT/r; mkdir -p $R
P="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b,lm_head=ring.c8.s8.k512"
el ab; timeout 230 tools/gpu_ab.sh --suite --rounds 2 new=dist/gpu_bundle.tar.xz base=dist/s21base/gpu_bundle.tar.xz new_p=dist/gpu_bundle.tar.xz:$P 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|bundle|passed|failed" | cut -c1-220
M=/tmp/lab_models/synthetic-llama-3.1-8b_fp16
for v in spread two; do
  el trace $v; E=""; [ $v = two ] && E="LAB_GPU_ATTN_SPREAD=0"
  env $P $E PYTHONPATH=$B timeout 100 python3 cuda/gpu_opt/step_trace.py --model_dir $M --context 512 --max_context 2500 --out $R/trace_$v > $R/trace_$v.log 2>&1; echo rc=$?; sed -n 5,12p $R/trace_$v/step_trace.md | cut -d'|' -f1-5,9-14; grep -m1 "Step (first" $R/trace_$v/step_trace.md | cut -c1-120
done
el done
tar -C $OUT -czf $OUT/r.tgz r
