#!/usr/bin/env bash
# Session 28, call 8: w8.u1.r2.b (the persistent form of qkv's tile, Configs index 22; qkv's 384 one-task blocks fill
# 128 SMs three apiece and leave 4 idle) checked bitwise against w8.u1.r2 first, then in alternating processes:
# qkv pinned to w8.u1.r2.b, pinned to w8.u1.r2 (the pick of every process so far), and the tuner free; 2 rounds.
set -u
N=dist/gpu_bundle.tar.xz
rm -rf /tmp/b8 && mkdir -p /tmp/b8 && tar -C /tmp/b8 -xJf $N; grep commit /tmp/b8/gpu_bundle/BUILD_INFO
(cd /tmp/b8/gpu_bundle && timeout 120 ./run.sh test -m gpu -k "persistent_tiles_bitwise or spread_steps or variant_names" > /dev/null 2>&1); echo "rc=$?"
tail -1 $OUT/pytest.log; grep -E "^(FAILED|ERROR)" $OUT/pytest.log | head
if grep -qE " failed|[0-9]+ error" $OUT/pytest.log || ! grep -q " passed" $OUT/pytest.log; then echo "tests did not pass; no A/B"; exit 1; fi
timeout 400 tools/gpu_ab.sh --rounds 2 --contexts 512,2048 --trace 512 r2b=$N:LAB_GPU_TILES=qkv=w8.u1.r2.b r2=$N:LAB_GPU_TILES=qkv=w8.u1.r2 free=$N 2>&1 | grep -vE "^(I[0-9]|W[0-9]|\+)" | cut -c1-240
