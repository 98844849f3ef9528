#!/usr/bin/env bash
# Session 22: SmolLM2's GPU tests on the bundle left in /tmp/new_bundle.tar.xz, after p.aa and p.ab were copied
# to /tmp/smol by two earlier calls. Carry dist/smol/p.ac, dist/pylib and this script.
set -u
cat /tmp/smol/p.aa /tmp/smol/p.ab dist/smol/p.ac > /tmp/smol/s.gguf && ls -la /tmp/smol/s.gguf
rm -rf /tmp/nb /tmp/pylib && mkdir -p /tmp/nb && tar -C /tmp/nb -xJf /tmp/new_bundle.tar.xz && cp -r dist/pylib /tmp/pylib
grep commit /tmp/nb/gpu_bundle/BUILD_INFO
R=$OUT/r; mkdir -p $R
cd /tmp/nb/gpu_bundle && LAB_SMOLLM2_GGUF=/tmp/smol/s.gguf PYTHONPATH=/tmp/pylib OUT=$R timeout 300 ./run.sh test -m gpu -k smollm2 -rA -s 2>&1 | tail -12
