#!/usr/bin/env bash
# Session 10, call 4 (bundle 47ad...): GPU suite (no SmolLM2); A/B at 512/2304: each layout its splits (short 64, 4-warp one wave)
# against LAB_GPU_ATTN_SPLITS=49 (both at 49, as 4bafa09); the stage-4 bench.
set -u
rm -rf /tmp/gpu_bundle && tar xJf dist/gpu_bundle.tar.xz -C /tmp && grep commit /tmp/gpu_bundle/BUILD_INFO
nvidia-smi --query-gpu=name --format=csv,noheader
cd /tmp/gpu_bundle
timeout 100 ./run.sh model > /tmp/model.log 2>&1 &
OUT="$OUT" timeout 90 ./run.sh test -m gpu -k "not smollm2" > /dev/null 2>&1; mv "$OUT/pytest.log" "$OUT/gpu_pytest.log"
tail -1 "$OUT/gpu_pytest.log"; grep -E "^FAILED|^ERROR" "$OUT/gpu_pytest.log" | head -8 | cut -c1-200
wait
cd - > /dev/null
B=/tmp/gpu_bundle
M=/tmp/lab_models/synthetic-llama-3.1-8b_fp16
PYTHONPATH=/tmp/gpu_bundle timeout 100 python3 cuda/gpu_opt/decode_variants.py --model_dir $M --out /tmp/v --repeats 3 --contexts 512,2304 \
  --variant layout=$B --variant s49=$B:LAB_GPU_ATTN_SPLITS=49 --variant layout2=$B --variant s49b=$B:LAB_GPU_ATTN_SPLITS=49 > "$OUT/variants_layout.log" 2>&1
tail -7 "$OUT/variants_layout.log"; cp /tmp/v/variants.md /tmp/v/variants.json "$OUT/" 2>/dev/null
for f in /tmp/v/layout.log /tmp/v/s49.log; do grep -h "splits per kv head" $f; grep -hiE "picked|graph tuner" $f | tail -1 | cut -c1-200; done
cd /tmp/gpu_bundle
t=$(date +%s); OUT="$OUT" timeout 330 ./run.sh bench > "$OUT/bench.log" 2>&1; echo "bench rc $? $(( $(date +%s) - t )) s"
grep -E "gpu_opt .*decode|hf_compile .*decode @ 512 \|" "$OUT/bench/bench.md" | cut -c120-210; grep -E "H200.*: read" "$OUT/bench/bench.md" | cut -c1-60
