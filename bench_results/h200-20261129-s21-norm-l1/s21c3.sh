#!/usr/bin/env bash
# Session 21, call 3: LAB_GPU_NORM_EARLY=all (a register tile asks its norm weights into L1 before the PDL wait).
# handoff_latency's kNormL1 row, the tile and probe GPU tests, then an A/B with the bench's tiles pinned:
# c9bf9c7 (the benched bundle), HEAD as is, HEAD with NORM_EARLY=all; three rounds. Then step traces at 512 of
# HEAD pinned, without and with the knob (qkv's staged phase). Carry dist/gpu_bundle.tar.xz,
# dist/s21base/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
cp dist/gpu_bundle.tar.xz /tmp/new_bundle.tar.xz  # for the next calls (SmolLM2), while the host stays warm
R=$OUT/r; mkdir -p $R
el handoff; for k in 4096 14336; do timeout 60 $B/tools/handoff_latency $k 40; done > $R/handoff.log 2>&1; grep -A8 "engine-like" $R/handoff.log | grep -v RESULT
el tests; (cd $B && OUT=$R timeout 150 ./run.sh test -m gpu -k "lab_probes or bitwise_at_width or ring_knobs" > /dev/null 2>&1); tail -1 $R/pytest.log; cp $R/pytest.log $R/tests_pytest.log
P="LAB_GPU_TILES=qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b,lm_head=ring.c8.s8.k512"
el ab; timeout 300 tools/gpu_ab.sh --rounds 3 base=dist/s21base/gpu_bundle.tar.xz:$P same=dist/gpu_bundle.tar.xz:$P l1=dist/gpu_bundle.tar.xz:$P,LAB_GPU_NORM_EARLY=all 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|bundle" | cut -c1-200
M=/tmp/lab_models/synthetic-llama-3.1-8b_fp16
for v in same l1; do
  el trace $v; E=""; [ $v = l1 ] && E="LAB_GPU_NORM_EARLY=all"
  env $P $E PYTHONPATH=$B timeout 100 python3 cuda/gpu_opt/step_trace.py --model_dir $M --context 512 --max_context 2500 --out $R/trace_$v > $R/trace_$v.log 2>&1; echo rc=$?; sed -n 5,12p $R/trace_$v/step_trace.md
done
el done
tar -C $OUT -czf $OUT/r.tgz r
