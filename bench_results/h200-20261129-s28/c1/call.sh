#!/usr/bin/env bash
# Session 28, call 1: the GPU suite of the bundle whose spread attention steps get tiles of their own (GraphTune's
# second search at half the spread layout's keys; SmolLM2's tests left out: no .gguf on a fresh host), then the
# A/B: spread steps tuned apart (the bundle's default) against LAB_GPU_TUNE_SPREAD_POS=0 (one search, at 1,024,
# as before), 3 rounds at 512 and 2048, alternating processes on one card.
set -u
T0=$(date +%s); el() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
N=dist/gpu_bundle.tar.xz
rm -rf /tmp/b1 && mkdir -p /tmp/b1 && tar -C /tmp/b1 -xJf $N; grep commit /tmp/b1/gpu_bundle/BUILD_INFO
el suite; (cd /tmp/b1/gpu_bundle && timeout 200 ./run.sh test -m gpu -k "not smollm2" > /dev/null 2>&1); echo "rc=$?"
tail -1 $OUT/pytest.log; grep -E "^(FAILED|ERROR)" $OUT/pytest.log | head -10
if grep -qE " failed|[0-9]+ error" $OUT/pytest.log || ! grep -q " passed" $OUT/pytest.log; then echo "suite did not pass; no A/B"; exit 1; fi
el ab; timeout 330 tools/gpu_ab.sh --rounds 3 --contexts 512,2048 spread=$N one=$N:LAB_GPU_TUNE_SPREAD_POS=0 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-240
el done
