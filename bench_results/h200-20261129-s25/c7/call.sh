#!/usr/bin/env bash
# Session 25, call 7: SmolLM2's GPU tests (greedy tokens for 64+ tokens, generate on the device, perplexity
# against torch) with c134279's bundle, whose default is the fused MLP (LAB_GPU_MLP=auto). Call 6 copied p.aa
# and p.ab to /tmp/smol. Carry dist/smol/p.ac, dist/pylib, dist/gpu_bundle.tar.xz and this script.
set -u
cat /tmp/smol/p.aa /tmp/smol/p.ab dist/smol/p.ac > /tmp/smol/s.gguf && ls -la /tmp/smol/s.gguf
rm -rf /tmp/nb /tmp/pylib && mkdir -p /tmp/nb && tar -C /tmp/nb -xJf dist/gpu_bundle.tar.xz && cp -r dist/pylib /tmp/pylib
grep commit /tmp/nb/gpu_bundle/BUILD_INFO
R=$OUT/r; mkdir -p $R
cd /tmp/nb/gpu_bundle && LAB_SMOLLM2_GGUF=/tmp/smol/s.gguf PYTHONPATH=/tmp/pylib OUT=$R timeout 150 ./run.sh test -m gpu -k smollm2 -rA > $R/pytest.log 2>&1
echo "rc=$?"; grep -iE "smollm2|perplex|greedy" $R/pytest.log | grep -v "^test_" | tail -14; tail -3 $R/pytest.log
