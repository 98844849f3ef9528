// Stage 4 kernels: fp16 weights and KV cache, fp32 accumulation; the residual stream in fp32, and (decode,
// LAB_GPU_ACT16=all, the default) each matvec's input also written in fp16 by the kernel that produces it.
//
// Decode (one token) is a chain of matrix-vector products, each reading its weights from HBM exactly
// once, so its speed limit is bytes / bandwidth. These kernels try to keep HBM busy from the first
// to the last byte of a step:
//   DecodeMatvecKernel  one kernel per linear layer, with the neighbouring elementwise work fused in:
//                       RMSNorm folded into the input staging (scale computed per block), RoPE + q
//                       scaling + fp16 KV-cache write in the qkv epilogue, SiLU(gate)*up in the
//                       gate/up epilogue, the residual add in the o_proj/down_proj epilogues.
//                       16-byte streaming weight loads, coalesced across the warp, a whole batch of
//                       them in flight per thread and the next batch issued before the current one is
//                       used (register double buffering); the input vector lives in shared memory
//                       (staged from its fp16 copy: half the bytes of the step's first phase;
//                       o_proj's and down's by one bulk copy, kept fp16, the second weight batch right
//                       behind it: XB, README "x by one bulk copy", "The second batch behind the copy").
//   AttentionKernel     flash-decoding: the keys are split across blocks (grid = kv heads x splits),
//                       each block keeps an online softmax per query head of its GQA group, reading
//                       every cached K/V row once for the whole group; the last block of a kv head
//                       to finish merges the partial results (no second launch). Two launch layouts:
//                       4-warp blocks over 16-key splits, and at short contexts 8-warp blocks over
//                       64-key splits, whose merge reads 4x fewer partials (the engine's
//                       LAB_GPU_ATTN_SHORT, README "Attention at short contexts").
// Both begin with programmatic dependent launch (PDL): a kernel may start while the previous one
// drains; it issues its first weight loads (attention: its older K/V rows), which depend on nothing,
// and then waits in griddepcontrol.wait until the previous kernel's results are visible. Launched without the PDL
// attribute, the wait is a no-op, so the kernels are correct either way.
//
// Prefill (a chunk of prompt tokens) has two paths (README.md, "Prefill"):
//   tensor-core (default)  the GEMMs and FlashAttention of the prefill kernel lab (cuda/prefill/
//                          prefill.h) with the small glue kernels of kernels_prefill.cuh: embedding,
//                          residual add fused with RMSNorm (fp32 residual, fp16 GEMM input), RoPE + KV
//                          write from the fp32 QKV GEMM output (q to fp16 for FlashAttention);
//   simple (LAB_GPU_PREFILL=simple)  a tiled fp16-weight GEMM with fp32 accumulation on CUDA cores,
//                          row RMSNorm, RoPE/KV write, SwiGLU, and the decode attention kernel with one
//                          more grid dimension for the tokens (causal by position).
// The kernels live in three headers, each one idea:
//   kernels_common.cuh     PDL wait/trigger, the streaming load, fp16 unpack, dot and warp sums
//   kernels_matvec.cuh     DecodeMatvecKernel and its epilogues (qkv + RoPE + KV write, SiLU*up, residual,
//                          lm_head's argmax key)
//   kernels_matvec_ring.cuh  RingMatvecKernel: the same epilogues, the weights by bulk copies through a ring in
//                          shared memory (kernel lab v10; README "The weight ring")
//   kernels_attention.cuh  AttentionKernel
//   kernels_attention_mma.cuh  AttentionMmaKernel: the short layout's scores and sums over keys on the tensor
//                          cores (v4; the spread steps' default since session 27, LAB_GPU_ATTN_MMA)
//   kernels_attention_merge.cuh  what both share: AttnParams, the output store, the split merge
//   kernels_mlp.cuh        RingMlpKernel: gate/up, SiLU and down as one kernel, down split by columns (kernel lab
//                          v14; LAB_GPU_MLP=auto|fused, the default since session 25)
#pragma once
#include "cuda/gpu_opt/kernels_attention.cuh"
#include "cuda/gpu_opt/kernels_attention_mma.cuh"
#include "cuda/gpu_opt/kernels_common.cuh"
#include "cuda/gpu_opt/kernels_matvec.cuh"
#include "cuda/gpu_opt/kernels_matvec_ring.cuh"
#include "cuda/gpu_opt/kernels_mlp.cuh"
