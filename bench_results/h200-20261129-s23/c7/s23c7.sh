#!/usr/bin/env bash
# Session 23, call 7 (the last 164 s of device time): a short bench.py run of f13995e, gpu_opt against
# hf_compile only, greedy decode at context 512 (TTFT at 128), 3 repeats, on whatever card this host has
# (call 6's read 4,709 GB/s and gpu_opt 269.8 tok/s in its A/B row). Everything is written under $OUT as it
# goes, so a run stopped by the budget still brings back its log. Carry dist/gpu_bundle.tar.xz and this script.
set -u
T0=$(date +%s)
rm -rf /tmp/b && mkdir -p /tmp/b && tar -C /tmp/b -xJf dist/gpu_bundle.tar.xz; B=/tmp/b/gpu_bundle; grep commit $B/BUILD_INFO
R=$OUT/r; mkdir -p $R
(cd $B && ./run.sh model > $R/model.log 2>&1)
left=$(( 150 - ($(date +%s) - T0) )); echo "model done at $(( $(date +%s) - T0 )) s; bench gets $left s"
(cd $B && LAB_GPU_VERBOSE=1 timeout $left ./run.sh bench --model_dir /tmp/lab_models/synthetic-llama-3.1-8b_fp16 \
  --engines gpu_opt --peers hf_compile --device cuda --prompt_lengths 128 --contexts 512 --decode_tokens 64 \
  --repeats 3 --decode_modes greedy --out_dir $R/bench > $R/bench.log 2>&1); echo "bench rc=$? at $(( $(date +%s) - T0 )) s"
grep -E "^\| NVIDIA" $R/bench/bench.md 2>/dev/null | cut -c1-260; grep -E "GPU read:|decode \(greedy\)" $R/bench.log | cut -c60-260
