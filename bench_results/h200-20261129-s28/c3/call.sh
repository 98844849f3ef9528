#!/usr/bin/env bash
# Session 28, calls 3a-3d: SmolLM2's .gguf to the warm GPU host in four pieces (the working tree and a call's carry
# share 64 MiB): `bash call.sh 00` carrying dist/smol/p.00, then 01, 02, 03 (the last also carries dist/pylib: gguf).
set -u
mkdir -p /tmp/smol && cp dist/smol/p.$1 /tmp/smol/ && ls -la /tmp/smol
[ -d dist/pylib ] && rm -rf /tmp/pylib && cp -r dist/pylib /tmp/pylib && ls /tmp/pylib
