#!/usr/bin/env bash
# Session 21, call 7: LAB_GPU_ATTN_SPREAD=1 with its one-wave grid (b67485a), and with LAB_GPU_CARVEOUT=max. The attention and probe
# GPU tests, then an A/B with the bench's tiles pinned: c9bf9c7 (the benched bundle), HEAD as is, HEAD spread;
# three rounds. Then step traces at 512 of HEAD pinned, without and with the knob.
# Carry dist/gpu_bundle.tar.xz, dist/s21base/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
el tests; (cd $B && OUT=$R timeout 200 ./run.sh test -m gpu -k "attention_layouts or attention_knobs or lab_probes" > /dev/null 2>&1); tail -1 $R/pytest.log; cp $R/pytest.log $R/tests_pytest.log
P="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b,lm_head=ring.c8.s8.k512"
el ab; timeout 300 tools/gpu_ab.sh --rounds 3 base=dist/s21base/gpu_bundle.tar.xz:$P same=dist/gpu_bundle.tar.xz:$P spread=dist/gpu_bundle.tar.xz:$P,LAB_GPU_ATTN_SPREAD=1 spread_max=dist/gpu_bundle.tar.xz:$P,LAB_GPU_ATTN_SPREAD=1,LAB_GPU_CARVEOUT=max 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|bundle" | cut -c1-200
M=/tmp/lab_models/synthetic-llama-3.1-8b_fp16
for v in same spread; do
  el trace $v; E=""; [ $v = spread ] && E="LAB_GPU_ATTN_SPREAD=1"
  env $P $E PYTHONPATH=$B timeout 100 python3 cuda/gpu_opt/step_trace.py --model_dir $M --context 512 --max_context 2500 --out $R/trace_$v > $R/trace_$v.log 2>&1; echo rc=$?; sed -n 5,12p $R/trace_$v/step_trace.md | cut -d'|' -f1-5,9-11; grep -m1 "Step (first" $R/trace_$v/step_trace.md | cut -c1-120
done
el done
tar -C $OUT -czf $OUT/r.tgz r
