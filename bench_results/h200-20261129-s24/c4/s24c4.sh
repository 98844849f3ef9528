#!/usr/bin/env bash
# Session 24, call 4: the whole GPU suite of HEAD's bundle (167129e's code) with SmolLM2's file present, so its
# greedy-token and perplexity tests run too. p.aa and p.ab were copied to /tmp/smol by calls 2 and 3; the bundle
# is call 1's /tmp/new_bundle.tar.xz. Carry dist/smol/p.ac, dist/pylib and this script.
set -u
cat /tmp/smol/p.aa /tmp/smol/p.ab dist/smol/p.ac > /tmp/smol/s.gguf && ls -la /tmp/smol/s.gguf
rm -rf /tmp/nb /tmp/pylib && mkdir -p /tmp/nb && tar -C /tmp/nb -xJf /tmp/new_bundle.tar.xz && cp -r dist/pylib /tmp/pylib
grep commit /tmp/nb/gpu_bundle/BUILD_INFO
R=$OUT/r; mkdir -p $R
cd /tmp/nb/gpu_bundle && LAB_SMOLLM2_GGUF=/tmp/smol/s.gguf PYTHONPATH=/tmp/pylib OUT=$R timeout 400 ./run.sh test -m gpu -rA > $R/pytest.log 2>&1
echo "rc=$?"; grep -iE "smollm2|perplex" $R/pytest.log | tail -12; tail -4 $R/pytest.log
