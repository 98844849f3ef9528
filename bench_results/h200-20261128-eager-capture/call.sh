#!/usr/bin/env bash
# Session 10, call 1: the GPU suite (no SmolLM2) on HEAD 886f24e (eager capture of both layouts' graphs), then the stage-4 bench.
set -u
rm -rf /tmp/gpu_bundle && tar xJf dist/gpu_bundle.tar.xz -C /tmp && grep commit /tmp/gpu_bundle/BUILD_INFO
nvidia-smi --query-gpu=name --format=csv,noheader
cd /tmp/gpu_bundle
timeout 100 ./run.sh model > /tmp/model.log 2>&1 &
OUT="$OUT" timeout 100 ./run.sh test -m gpu -k "not smollm2" > /dev/null 2>&1; mv "$OUT/pytest.log" "$OUT/gpu_pytest.log"
tail -1 "$OUT/gpu_pytest.log"; grep -E "^FAILED|^ERROR" "$OUT/gpu_pytest.log" | head -8 | cut -c1-200
wait
t=$(date +%s); OUT="$OUT" timeout 400 ./run.sh bench > "$OUT/bench.log" 2>&1; echo "bench rc $? $(( $(date +%s) - t )) s"
grep -E "gpu_opt .*decode|hf_compile .*decode @ 512 \|" "$OUT/bench/bench.md" | cut -c1-200; grep -E "H200.*: read" "$OUT/bench/bench.md" | cut -c1-200
ls "$OUT/bench"
