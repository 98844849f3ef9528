#!/usr/bin/env bash
# Session 28, call 4: SmolLM2's GPU tests (greedy tokens and perplexity against torch) and the spread-tiles test, on the
# bundle c2 unpacked (/tmp/b) and the .gguf from calls 3a-3d (md5 a1231443440b107ff29f02bdb38c9d0a).
cat /tmp/smol/p.00 /tmp/smol/p.01 /tmp/smol/p.02 /tmp/smol/p.03 > /tmp/smol/s.gguf && md5sum /tmp/smol/s.gguf; grep commit /tmp/b/gpu_bundle/BUILD_INFO
cd /tmp/b/gpu_bundle && LAB_SMOLLM2_GGUF=/tmp/smol/s.gguf PYTHONPATH=/tmp/pylib timeout 300 ./run.sh test -m gpu -k "smollm2 or spread_steps" -rA > /dev/null 2>&1; echo "rc=$?"
grep -E "PASSED|FAILED|ERROR|SKIPPED" $OUT/pytest.log | cut -c1-200 | tail -12; grep -iE "perplexity|ppl" $OUT/pytest.log | head -5; tail -1 $OUT/pytest.log
