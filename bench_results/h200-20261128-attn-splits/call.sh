#!/usr/bin/env bash
# Session 10, call 2: the 4-warp layout's split count past 2,112 keys (the bench's 2048 blocks at 2304-2431
# read 225-230 against 234): default (64 splits) against LAB_GPU_ATTN_SPLITS=49/48/32; step traces at 2400.
set -u
rm -rf /tmp/gpu_bundle && tar xJf dist/gpu_bundle.tar.xz -C /tmp && grep commit /tmp/gpu_bundle/BUILD_INFO
nvidia-smi --query-gpu=name --format=csv,noheader
cd /tmp/gpu_bundle && timeout 100 ./run.sh model > /tmp/model.log 2>&1; cd - > /dev/null
B=/tmp/gpu_bundle
M=/tmp/lab_models/synthetic-llama-3.1-8b_fp16
PYTHONPATH=/tmp/gpu_bundle timeout 300 python3 cuda/gpu_opt/decode_variants.py --model_dir $M --out /tmp/v --repeats 3 --contexts 2048,2304,2560,2816 \
  --variant def=$B --variant s49=$B:LAB_GPU_ATTN_SPLITS=49 --variant s48=$B:LAB_GPU_ATTN_SPLITS=48 --variant s32=$B:LAB_GPU_ATTN_SPLITS=32 \
  --variant def2=$B --variant s49b=$B:LAB_GPU_ATTN_SPLITS=49 > "$OUT/variants_splits.log" 2>&1
tail -9 "$OUT/variants_splits.log"; cp /tmp/v/variants.png "$OUT/" 2>/dev/null; cp /tmp/v/variants.md /tmp/v/variants.json "$OUT/" 2>/dev/null
for v in def:"" s49:49; do n=${v%%:*}; s=${v#*:}
LAB_GPU_ATTN_SPLITS=$s PYTHONPATH=/tmp/gpu_bundle timeout 60 python3 cuda/gpu_opt/step_trace.py --model_dir $M --context 2400 --out /tmp/tr_$n > "$OUT/trace_2400_$n.log" 2>&1
grep -E "^\| attention|^Step" "$OUT/trace_2400_$n.log" | cut -c1-200
done
