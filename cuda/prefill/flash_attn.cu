// FlashAttention (prefill, causal, GQA) on the tensor cores — FlashAttention-2 style, mma.sync.
//
// Contract (see AttentionParams in prefill.h): O[i, h, :] = softmax_j(scale * Q[i,h,:]·K[j,kvh,:]) V[j,kvh,:]
// over keys j = 0 .. pos+i, kvh = h / (n_heads / n_kv_heads). head_dim D = 64 or 128; any n >= 1 and
// pos >= 0 (chunked prefill: the cache already holds keys 0 .. pos+n-1). Q, K, V, O 16-byte aligned,
// all strides multiples of 8 elements. fp16 in, fp32 softmax and accumulation, fp16 out.
// Launch: grid (n_heads, ceil(n/128)), 256 threads (8 warps x 16 query rows), dynamic shared memory
// (128 + 4*Bc) * D * 2 bytes (96 KB at D = 128, Bc = 64). Query tiles are issued longest-first (the
// last tile of the prompt attends to the most keys), all heads of one tile together so the four
// query heads of a KV head read its K/V tiles from L2 at about the same time.
//
// Versions (FlashAttentionVersion; FlashAttention() runs kFlashDefaultVersion):
//   v1  Q fragments kept in registers for the whole key loop, Bc = 64 keys per tile; 214 registers,
//       so one block (8 warps) per SM.
//   v2  Q re-read from shared memory at every key tile (one more ldmatrix per 8 mma), capped at 128
//       registers for two blocks (16 warps) per SM; Bc = 64 (spills 104 bytes at D = 128).
//   v3  as v2 with Bc = 32 (no spill).
// Prediction for v2/v3: latency-bound (2 warps per scheduler) -> more warps hide more. Outcome on the
// H200: both slower than v1 (251 and 256 vs 281 TFLOP/s at n = 32768): the extra Q traffic through
// shared memory costs more than the extra warps win, which points at shared-memory bandwidth (each
// warp re-reads whole K and V tiles for only 16 rows) as the limiter. README.md has the next steps.
//
// Per block: Q tile (128 x D) -> registers once (ldmatrix); then for each 64-key tile of K/V
// (double-buffered with cp.async, rows past the cache end zero-filled):
//   S = Q K^T        16x64 per warp, mma.sync m16n8k16 with K read by ldmatrix (K rows are the
//                    "column-major B" of the product as stored);
//   causal mask      only on tiles that cross the diagonal; tiles entirely above a warp's rows are skipped;
//   online softmax   running row max m and sum l in fp32 (exp2 with the scale folded into log2 e),
//                    rescaling the O accumulator when the max grows;
//   O += P V         P re-packed from the S accumulators straight into A fragments (the m16n8 C layout
//                    of two adjacent key tiles is the m16k16 A layout), V read by ldmatrix.trans.
// The n x (pos+n) score matrix never exists in device memory: traffic is Q, K, V, O once per tile row.
// Shared memory rows are D*2 bytes; 16-byte chunk c of row r sits at chunk c ^ (r & 7), so every
// ldmatrix phase (8 rows, same logical chunk) hits 8 different bank groups.
#include <cmath>

#include "cuda/prefill/device_common.h"

namespace lab::prefill {
namespace {

constexpr int kBr = 128, kWarps = 8, kThreads = kWarps * 32;
constexpr int kFlashDefaultVersion = 1;  // the fastest on the bench (README.md: 281 vs 251/256 TFLOP/s at 32k)

template <int D, int kBc>
constexpr int FaSmemBytes() {
  return (kBr + 4 * kBc) * D * 2;
}

template <int D>
__device__ __forceinline__ uint32_t FaOff(int row, int chunk) {
  return static_cast<uint32_t>(row * (D * 2) + ((chunk ^ (row & 7)) << 4));
}

template <int D, bool kQInRegs, int kMinBlocks, int kBc>
__global__ void __launch_bounds__(kThreads, kMinBlocks) FlashAttnKernel(AttentionParams p, float scale_log2) {
  constexpr int NT = kBc / 8;  // key n8-tiles per key tile
  constexpr int CH = D / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sq = detail::SmemU32(smem);
  const uint32_t sk0 = sq + kBr * D * 2;
  const uint32_t sv0 = sk0 + 2 * kBc * D * 2;
  constexpr uint32_t kTileBytes = kBc * D * 2;

  const int h = blockIdx.x;
  const int qt = gridDim.y - 1 - blockIdx.y;  // longest tiles first
  const int q0 = qt * kBr;
  const int kvh = h / (p.n_heads / p.n_kv_heads);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int kv_len = p.pos + p.n;                          // keys present in the cache
  const int block_keys = min(p.pos + q0 + kBr, kv_len);    // keys any row of this block needs
  const int nkb = (block_keys + kBc - 1) / kBc;

  const half* qbase = p.Q + static_cast<int64_t>(h) * D;
  const half* kbase = p.K + static_cast<int64_t>(kvh) * p.kv_head_stride;
  const half* vbase = p.V + static_cast<int64_t>(kvh) * p.kv_head_stride;

  // Q tile: 128 rows x CH chunks.
#pragma unroll
  for (int i = 0; i < kBr * CH / kThreads; ++i) {
    const int idx = tid + i * kThreads, row = idx / CH, ch = idx % CH;
    const int qi = q0 + row;
    const bool ok = qi < p.n;
    detail::CpAsync16(sq + FaOff<D>(row, ch), qbase + static_cast<int64_t>(ok ? qi : 0) * p.q_pos_stride + ch * 8, ok ? 16 : 0);
  }
  auto load_kv = [&](int kb, int buf) {
#pragma unroll
    for (int i = 0; i < kBc * CH / kThreads; ++i) {
      const int idx = tid + i * kThreads, row = idx / CH, ch = idx % CH;
      const int key = kb * kBc + row;
      const bool ok = key < kv_len;
      const int64_t off = static_cast<int64_t>(ok ? key : 0) * p.kv_pos_stride + ch * 8;
      const uint32_t o = buf * kTileBytes + FaOff<D>(row, ch);
      detail::CpAsync16(sk0 + o, kbase + off, ok ? 16 : 0);
      detail::CpAsync16(sv0 + o, vbase + off, ok ? 16 : 0);
    }
  };
  load_kv(0, 0);
  detail::CpAsyncCommit();

  uint32_t qf[kQInRegs ? D / 16 : 1][4];  // Q fragments (kQInRegs), else re-read per key tile
  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[j][e] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

  const int g = lane >> 2, t = lane & 3;
  const int warp_row0 = warp * 16;                     // first row of this warp in the tile
  const int warp_qpos0 = p.pos + q0 + warp_row0;       // absolute position of that row
  const int qpos_r0 = warp_qpos0 + g, qpos_r1 = qpos_r0 + 8;

  for (int kb = 0; kb < nkb; ++kb) {
    const int buf = kb & 1;
    if (kb + 1 < nkb) load_kv(kb + 1, buf ^ 1);
    detail::CpAsyncCommit();
    detail::CpAsyncWait<1>();
    __syncthreads();
    if (kQInRegs && kb == 0) {
#pragma unroll
      for (int kk = 0; kk < (kQInRegs ? D / 16 : 0); ++kk)
        detail::Ldmatrix4(qf[kk], sq + FaOff<D>(warp_row0 + (lane & 15), kk * 2 + (lane >> 4)));
    }
    const int key0 = kb * kBc;
    if (key0 <= warp_qpos0 + 15) {  // else every key of the tile is in this warp's future: skip
      const uint32_t sk = sk0 + buf * kTileBytes, sv = sv0 + buf * kTileBytes;
      float s[NT][4];
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qa[4];
        if constexpr (kQInRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[e] = qf[kQInRegs ? kk : 0][e];
        } else {
          detail::Ldmatrix4(qa, sq + FaOff<D>(warp_row0 + (lane & 15), kk * 2 + (lane >> 4)));
        }
#pragma unroll
        for (int q = 0; q < NT / 2; ++q) {
          uint32_t b[4];
          detail::Ldmatrix4(b, sk + FaOff<D>(q * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
          detail::Mma16816(s[2 * q], qa, b[0], b[1]);
          detail::Mma16816(s[2 * q + 1], qa, b[2], b[3]);
        }
      }
      // Scale into the log2 domain; mask keys after the row's position (only on diagonal tiles).
      const bool diag = key0 + kBc - 1 > warp_qpos0;
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[j][e] * scale_log2;
          if (diag) {
            const int key = key0 + j * 8 + 2 * t + (e & 1);
            if (key > ((e >> 1) ? qpos_r1 : qpos_r0)) x = -INFINITY;
          }
          s[j][e] = x;
        }
      // Online softmax, two rows per thread (r = 0: row g, r = 1: row g + 8); a row lives in one quad.
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < NT; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * r], s[j][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[r], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = exp2f(m_run[r] - m_use);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          const float p0 = exp2f(s[j][2 * r] - m_use), p1 = exp2f(s[j][2 * r + 1] - m_use);
          s[j][2 * r] = p0;
          s[j][2 * r + 1] = p1;
          sum += p0 + p1;
        }
        l_run[r] = l_run[r] * alpha + sum;  // per-thread partial; the quad is summed at the end
        m_run[r] = m_new;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
          o[j][2 * r] *= alpha;
          o[j][2 * r + 1] *= alpha;
        }
      }
      // O += P V: P's A fragments come straight from the S accumulators.
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        uint32_t pa[4];
        pa[0] = detail::PackHalf2(s[2 * kk][0], s[2 * kk][1]);
        pa[1] = detail::PackHalf2(s[2 * kk][2], s[2 * kk][3]);
        pa[2] = detail::PackHalf2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[3] = detail::PackHalf2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t b[4];
          detail::Ldmatrix4Trans(b, sv + FaOff<D>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), dp * 2 + (lane >> 4)));
          detail::Mma16816(o[2 * dp], pa, b[0], b[1]);
          detail::Mma16816(o[2 * dp + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // everyone is done with `buf` before the next iteration refills it
  }
  detail::CpAsyncWait<0>();

  // Normalize and store.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int qi = q0 + warp_row0 + g + 8 * r;
    if (qi >= p.n) continue;
    half* dst = p.O + static_cast<int64_t>(qi) * p.o_pos_stride + static_cast<int64_t>(h) * D + 2 * t;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
      *reinterpret_cast<__half2*>(dst + 8 * j) = __floats2half2_rn(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
  }
}

template <int D, bool kQInRegs, int kMinBlocks, int kBc>
cudaError_t LaunchFlash(const AttentionParams& p, float scale, cudaStream_t s) {
  auto kernel = FlashAttnKernel<D, kQInRegs, kMinBlocks, kBc>;
  static bool configured = false;
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, FaSmemBytes<D, kBc>());
    if (e == cudaSuccess && kMinBlocks > 1)  // room for kMinBlocks * 96 KB: ask for the largest carve-out
      e = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    if (e != cudaSuccess) return e;
    configured = true;
  }
  dim3 grid(p.n_heads, (p.n + kBr - 1) / kBr);
  kernel<<<grid, kThreads, FaSmemBytes<D, kBc>(), s>>>(p, scale * 1.4426950408889634f);
  return cudaGetLastError();
}

}  // namespace

namespace detail {
const char* AttentionCheck(const AttentionParams& p) {
  if (!p.Q || !p.K || !p.V || !p.O) return "Q, K, V, O must be non-null";
  if (p.n < 1 || p.pos < 0) return "n >= 1 and pos >= 0";
  if (p.head_dim != 64 && p.head_dim != 128) return "head_dim must be 64 or 128";
  if (p.n_heads < 1 || p.n_kv_heads < 1 || p.n_heads % p.n_kv_heads) return "n_heads must be a multiple of n_kv_heads";
  if (p.n > 65535 * kBr) return "n too large for one launch";
  if (!Aligned16(p.Q) || !Aligned16(p.K) || !Aligned16(p.V) || !Aligned16(p.O)) return "Q, K, V, O must be 16-byte aligned";
  if (p.q_pos_stride % 8 || p.kv_pos_stride % 8 || p.kv_head_stride % 8 || p.o_pos_stride % 8)
    return "strides must be multiples of 8 elements";
  if (p.q_pos_stride < static_cast<int64_t>(p.n_heads) * p.head_dim || p.o_pos_stride < static_cast<int64_t>(p.n_heads) * p.head_dim)
    return "q_pos_stride and o_pos_stride must be >= n_heads * head_dim";
  return nullptr;
}
}  // namespace detail

cudaError_t FlashAttentionVersion(int version, const AttentionParams& p, cudaStream_t stream) {
  detail::ThrowIf(detail::AttentionCheck(p), "FlashAttention");
  const float scale = p.scale > 0.f ? p.scale : 1.f / std::sqrt(static_cast<float>(p.head_dim));
  const bool d128 = p.head_dim == 128;
  switch (version) {
    case 1: return d128 ? LaunchFlash<128, true, 1, 64>(p, scale, stream) : LaunchFlash<64, true, 1, 64>(p, scale, stream);
    case 2: return d128 ? LaunchFlash<128, false, 2, 64>(p, scale, stream) : LaunchFlash<64, false, 2, 64>(p, scale, stream);
    case 3: return d128 ? LaunchFlash<128, false, 2, 32>(p, scale, stream) : LaunchFlash<64, false, 2, 32>(p, scale, stream);
  }
  throw std::invalid_argument("FlashAttentionVersion: version must be 1, 2 or 3");
}

cudaError_t FlashAttention(const AttentionParams& p, cudaStream_t stream) {
  return FlashAttentionVersion(kFlashDefaultVersion, p, stream);
}

}  // namespace lab::prefill
