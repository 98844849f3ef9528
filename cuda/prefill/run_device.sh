#!/usr/bin/env bash
# One device call (carry dist/prefill, run from the repo root): SASS check, correctness per version (own process each), bench, pytest; outputs in $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
D=dist/prefill
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.sm,driver_version,power.limit --format=csv > $OUT/gpu.txt 2>&1
cat $OUT/gpu.txt
echo "SASS of v4/v3/flash: $(cuobjdump -sass $D/prefill_bench 2>/dev/null | grep -oE 'HGMMA\.[0-9A-Za-z]+|HMMA\.[0-9A-Z.]+|UTMALDG' | sort | uniq -c | tr '\n' ' ')"
cp $D/_prefill_kernels.so py/lab/
{
  for v in 1 2 3 4; do timeout 60 $D/prefill_bench --test --only gemm --versions $v; echo "rc(test gemm v$v)=$?"; done
  timeout 90 $D/prefill_bench --test --only attn; echo "rc(test attn)=$?"
} > $OUT/bench_test.log 2>&1
grep -v '^RESULT' $OUT/bench_test.log | grep -E 'FAIL|rc\(|error|DEVICE' | head -40
echo "test lines ok: $(grep -c ' ok  ' $OUT/bench_test.log)  FAIL: $(grep -c FAIL $OUT/bench_test.log)"
timeout 420 python3 $D/bench_prefill.py --bench $D/prefill_bench --out $OUT "$@" > $OUT/driver.log 2>&1
echo "driver rc=$?"
(cd py/tests && timeout 150 python3 -m pytest -q -rs -p no:cacheprovider test_gpu_prefill_kernels.py > $OUT/pytest.log 2>&1; echo "pytest rc=$?")
grep -E "passed|failed|skipped|Error" $OUT/pytest.log | tail -15
grep -E "^FAILED" $OUT/pytest.log | head -20
cat $OUT/prefill_results.md 2>/dev/null || tail -50 $OUT/driver.log
