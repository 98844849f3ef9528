#!/usr/bin/env bash
# Profiles ONE decode step of a GPU engine with Nsight Compute and prints a table of its kernels:
# time share and DRAM throughput (% of peak, GB/s), grouped by role (qkv, attention, o_proj, gate_up,
# down, lm_head, embed).
#
#   tools/ncu_decode.sh MODEL_DIR [CONTEXT=512] [ENGINE=gpu_opt] [OUT_DIR=/tmp/ncu_decode]
#
# Runs where the GPU bundle runs (PYTHONPATH must reach `lab`, e.g. dist/gpu_bundle). The engine
# prefills CONTEXT-1 random tokens and decodes two (graph captured, warm); only the third decode
# runs between cudaProfilerStart/Stop, which `--profile-from-start off` limits ncu to. Clocks are
# left alone (`--clock-control none`). Kernels inside the CUDA graph are profiled node by node, each
# serialized: the table shows where a step's time goes, not the overlap PDL buys.
set -euo pipefail
MODEL="${1:?usage: tools/ncu_decode.sh MODEL_DIR [CONTEXT] [ENGINE] [OUT_DIR]}"
CTX="${2:-512}"
ENGINE="${3:-gpu_opt}"
OUT="${4:-/tmp/ncu_decode}"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$OUT"
DRIVER="$OUT/ncu_driver.py"
cat > "$DRIVER" <<'PY'
import sys
import numpy as np
import torch
from lab import _engine
model, ctx, engine = sys.argv[1], int(sys.argv[2]), sys.argv[3]
e = _engine.Engine(engine, model, ctx + 16)
vocab = e.config["vocab_size"]
rng = np.random.default_rng(0)
e.prefill(rng.integers(0, vocab, ctx - 1))
for _ in range(2):
    e.decode(int(rng.integers(0, vocab)))
torch.cuda.init()
torch.cuda.cudart().cudaProfilerStart()
e.decode(int(rng.integers(0, vocab)))
torch.cuda.cudart().cudaProfilerStop()
print(f"profiled one {engine} decode step at context {ctx}")
PY
METRICS="gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum"
ncu --clock-control none --profile-from-start off --graph-profiling node --metrics "$METRICS" \
    --csv --page raw --print-units base --log-file "$OUT/ncu_decode.csv" \
    python3 "$DRIVER" "$MODEL" "$CTX" "$ENGINE"
python3 "$HERE/ncu_table.py" "$OUT/ncu_decode.csv" | tee "$OUT/ncu_decode.md"
