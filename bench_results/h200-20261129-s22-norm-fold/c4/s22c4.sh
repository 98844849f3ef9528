#!/usr/bin/env bash
# Session 22, call 4: the bench row of the fold default (run.sh bench, the tuner verbose), then why call 3's
# pinned processes ran 2.2% slower than the tuned ones on a 4,699 GB/s card (qkv's tail 285 us a step in the
# pinned trace): pinned with lm_head ring.c8.s16.k256 (the tuned processes' choice) or ring.c8.s8.k512, and
# with LAB_GPU_CARVEOUT=max / auto; step traces of the two lm_head pins. Leaves the bundle in
# /tmp/new_bundle.tar.xz for SmolLM2's calls. Carry dist/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
cp dist/gpu_bundle.tar.xz /tmp/new_bundle.tar.xz
R=$OUT/r; mkdir -p $R
el bench; (cd $B && LAB_GPU_VERBOSE=1 OUT=$R timeout 400 ./run.sh bench > $R/bench.log 2>&1); echo "bench rc=$?"
grep -A5 "graph tune" $R/bench.log | cut -c1-200; grep -E "gpu_opt.*decode @ (512|2048) \||hf_compile.*decode @ 512 \|" $R/bench/bench.md | cut -c1-220
T="qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=ring.c8.s16.k256,down=w8.u1.r4.b"
N=dist/gpu_bundle.tar.xz
el ab; timeout 150 tools/gpu_ab.sh --rounds 2 new=$N p8=$N:LAB_GPU_TILES=$T,lm_head=ring.c8.s8.k512 p16=$N:LAB_GPU_TILES=$T,lm_head=ring.c8.s16.k256 p8max=$N:LAB_GPU_TILES=$T,lm_head=ring.c8.s8.k512,LAB_GPU_CARVEOUT=max p8auto=$N:LAB_GPU_TILES=$T,lm_head=ring.c8.s8.k512,LAB_GPU_CARVEOUT=auto 2>&1 | grep -E "^[a-z0-9_]+: rc|Card|bundle" | cut -c1-220
M=/tmp/lab_models/synthetic-llama-3.1-8b_fp16
for v in s8.k512 s16.k256; do
  el trace $v
  env LAB_GPU_TILES=$T,lm_head=ring.c8.$v PYTHONPATH=$B timeout 100 python3 cuda/gpu_opt/step_trace.py --model_dir $M --context 512 --max_context 2500 --out $R/trace_$v > $R/trace_$v.log 2>&1; echo rc=$?; sed -n 7,12p $R/trace_$v/step_trace.md | cut -d'|' -f1-5,9-14; grep -m1 "Step (first" $R/trace_$v/step_trace.md | cut -c1-120
done
el done
tar -C $OUT -czf $OUT/r.tgz r
