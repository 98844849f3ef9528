#!/usr/bin/env bash
# Session 10, call 3: one wave of attention splits (4bafa09): GPU suite (no SmolLM2); A/B new default against
# LAB_GPU_ATTN_SPLITS=64 (the old default) at 512-2816; the stage-4 bench.
set -u
rm -rf /tmp/gpu_bundle && tar xJf dist/gpu_bundle.tar.xz -C /tmp && grep commit /tmp/gpu_bundle/BUILD_INFO
nvidia-smi --query-gpu=name --format=csv,noheader
cd /tmp/gpu_bundle
timeout 100 ./run.sh model > /tmp/model.log 2>&1 &
OUT="$OUT" timeout 100 ./run.sh test -m gpu -k "not smollm2" > /dev/null 2>&1; mv "$OUT/pytest.log" "$OUT/gpu_pytest.log"
tail -1 "$OUT/gpu_pytest.log"; grep -E "^FAILED|^ERROR" "$OUT/gpu_pytest.log" | head -8 | cut -c1-200
wait
cd - > /dev/null
B=/tmp/gpu_bundle
M=/tmp/lab_models/synthetic-llama-3.1-8b_fp16
PYTHONPATH=/tmp/gpu_bundle timeout 150 python3 cuda/gpu_opt/decode_variants.py --model_dir $M --out /tmp/v --repeats 3 --contexts 512,2048,2304,2560,2816 \
  --variant wave=$B --variant s64=$B:LAB_GPU_ATTN_SPLITS=64 --variant wave2=$B --variant s64b=$B:LAB_GPU_ATTN_SPLITS=64 > "$OUT/variants_wave.log" 2>&1
tail -7 "$OUT/variants_wave.log"; cp /tmp/v/variants.png /tmp/v/variants.md /tmp/v/variants.json "$OUT/" 2>/dev/null
grep -h "splits per kv head" /tmp/v/wave.log /tmp/v/s64.log | head -2
cd /tmp/gpu_bundle
t=$(date +%s); OUT="$OUT" timeout 320 ./run.sh bench > "$OUT/bench.log" 2>&1; echo "bench rc $? $(( $(date +%s) - t )) s"
grep -E "gpu_opt .*decode|hf_compile .*decode @ 512 \|" "$OUT/bench/bench.md" | cut -c120-210; grep -E "H200.*: read" "$OUT/bench/bench.md" | cut -c1-60
