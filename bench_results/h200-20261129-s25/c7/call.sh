#!/usr/bin/env bash
# Session 25, call 7: SmolLM2's GPU tests (greedy tokens for 64+ tokens, generate on the device, perplexity
# against torch) with c134279's bundle, whose default is the fused MLP (LAB_GPU_MLP=auto). Calls 6a-6c copied
# p.aa, p.ab and p.ac to /tmp/smol and dist/pylib to /tmp/pylib (the working tree and a carry share 64 MiB).
# Carry dist/gpu_bundle.tar.xz and this script.
set -u
cat /tmp/smol/p.aa /tmp/smol/p.ab /tmp/smol/p.ac > /tmp/smol/s.gguf && ls -la /tmp/smol/s.gguf
rm -rf /tmp/nb && mkdir -p /tmp/nb && tar -C /tmp/nb -xJf dist/gpu_bundle.tar.xz
grep commit /tmp/nb/gpu_bundle/BUILD_INFO
R=$OUT/r; mkdir -p $R
cd /tmp/nb/gpu_bundle && LAB_SMOLLM2_GGUF=/tmp/smol/s.gguf PYTHONPATH=/tmp/pylib OUT=$R timeout 150 ./run.sh test -m gpu -k smollm2 -rA > $R/pytest.log 2>&1
echo "rc=$?"; grep -iE "smollm2|perplex|greedy" $R/pytest.log | grep -v "^test_" | tail -14; tail -3 $R/pytest.log
