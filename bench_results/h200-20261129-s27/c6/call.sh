#!/usr/bin/env bash
# Session 27, call 6: the GPU suite of the bundle whose short attention layout runs on the tensor cores by default
# (LAB_GPU_ATTN_MMA=auto), SmolLM2's tests included (the .gguf from calls 5a-5c; md5 a1231443440b107ff29f02bdb38c9d0a).
set -u
cat /tmp/smol/p.00 /tmp/smol/p.01 /tmp/smol/p.02 > /tmp/smol/s.gguf && md5sum /tmp/smol/s.gguf
rm -rf /tmp/b6 && mkdir -p /tmp/b6 && tar -C /tmp/b6 -xJf dist/gpu_bundle.tar.xz
grep commit /tmp/b6/gpu_bundle/BUILD_INFO
cd /tmp/b6/gpu_bundle && LAB_SMOLLM2_GGUF=/tmp/smol/s.gguf PYTHONPATH=/tmp/pylib timeout 400 ./run.sh test -m gpu -rA > /dev/null 2>&1
echo "rc=$?"; grep -iE "perplex|greedy|smollm2" $OUT/pytest.log | grep -E "PASSED|FAILED|ERROR" | tail -8; tail -3 $OUT/pytest.log
