#!/usr/bin/env bash
# Session 22, call 5: the fold with the r2 tiles back at three blocks an SM (80 registers). The GPU suite of
# the new bundle, then an A/B: new (tuned), base (f750df3, tuned: the last bench row), the bench's tiles
# pinned with the fold on and off; step traces at 512 of the pinned fold on / off. Leaves the bundle in
# /tmp/new_bundle.tar.xz and the model in /tmp/lab_models for later calls.
# Carry dist/gpu_bundle.tar.xz, dist/s22base/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
cp dist/gpu_bundle.tar.xz /tmp/new_bundle.tar.xz
R=$OUT/r; mkdir -p $R
P="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b,lm_head=ring.c8.s8.k512"
N=dist/gpu_bundle.tar.xz; O=dist/s22base/gpu_bundle.tar.xz
el ab; timeout 330 tools/gpu_ab.sh --suite --rounds 2 new=$N base=$O fold_p=$N:$P nofold_p=$N:$P,LAB_GPU_NORM_FOLD=0 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|bundle|passed|failed|FAIL" | cut -c1-220
M=/tmp/lab_models/synthetic-llama-3.1-8b_fp16
for v in fold nofold; do
  el trace $v; E=""; [ $v = nofold ] && E="LAB_GPU_NORM_FOLD=0"
  env $P $E PYTHONPATH=$B timeout 100 python3 cuda/gpu_opt/step_trace.py --model_dir $M --context 512 --max_context 2500 --out $R/trace_$v > $R/trace_$v.log 2>&1; echo rc=$?; sed -n 7,12p $R/trace_$v/step_trace.md | cut -d'|' -f1-5,9-14; grep -m1 "Step (first" $R/trace_$v/step_trace.md | cut -c1-120
done
el done
tar -C $OUT -czf $OUT/r.tgz r
