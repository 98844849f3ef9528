// kernel_bench: the kernel lab's one bench program.
//
//   kernel_bench --out DIR [--reps N] [--model_dir DIR [--ctx 512,2048] [--naive]] [--no-chain]
//
// 1. Ceilings, measured in this run: a device-to-device copy (bytes read + written) and the read
//    ceiling: the higher of a load kernel (16-byte streaming loads over 2 GiB) and bulk copies (TMA)
//    into shared memory, contiguous and in 1 MB slices (cuda/common/read_ceiling.h).
// 2. Every matvec version (bench_versions.cu: v1..v11) at the Llama-3.1-8B decode shapes: random fp16
//    weights and fp32 input (never zeros), output poisoned with NaN, checked against an fp64 host
//    reference (relative L2 error), then timed with CUDA events: warm-up, then `reps` samples of a
//    batch of back-to-back launches over rotating weight copies (more bytes than L2 holds), median
//    and min-max per launch; then poisoned and checked once more. The engine's fused gate/up kernel
//    (RMSNorm + SiLU*up) is checked too.
// 3. The decode step's whole weight stream (32 layers of qkv, o, gate/up, down + lm_head, 15 GB) as a
//    chain of v5 launches: from the stream, from a CUDA graph, from a graph with programmatic
//    dependent launch: what launch gaps cost, and what remains; the same graph of v10/v11 weight rings; then
//    as one persistent kernel (chain_stream.cuh), every output checked against v5 first, and its two
//    diagnostics (bench_chain.cu).
// 4. With --model_dir: the gpu_opt engine's decode at each context (wall and device time per token), and
//    with --naive gpu_naive's at a short context.
// Writes DIR/kernel_bench.json and DIR/kernel_bench.md; prints the markdown.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cc/core/engine.h"
#include "cc/core/errors.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/read_ceiling.h"
#include "cuda/gpu_opt/gpu_opt_engine.h"
#include "cuda/gpu_opt/kernels.cuh"
#include "cuda/gpu_opt/kernels_prefill.cuh"
#include "cuda/kernels/bench_common.cuh"

namespace lab {
namespace {

// ------------------------------------------------------------------------------------------------
// Random data on the device (hash-based, reproducible), ceilings.
// ------------------------------------------------------------------------------------------------

__device__ __forceinline__ float HashUniform(uint64_t i, uint32_t seed) {  // in [-1, 1)
  uint32_t h = uint32_t(i) * 2654435761u ^ uint32_t(i >> 32) * 40503u ^ seed * 97531u;
  h ^= h >> 16;
  h *= 0x7feb352du;
  h ^= h >> 15;
  h *= 0x846ca68bu;
  h ^= h >> 16;
  return float(h >> 8) * (2.f / 16777216.f) - 1.f;
}

__global__ void FillHalf(__half* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = __float2half_rn(HashUniform(i, seed) * scale);
}

__global__ void FillFloat(float* p, size_t n, uint32_t seed, float scale, float offset) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = offset + HashUniform(i, seed) * scale;
}

}  // namespace

// ---- bench_common.cuh's definitions ----
namespace kbench {

void Fill(__half* p, size_t n, uint32_t seed, float scale) {
  FillHalf<<<2048, 256>>>(p, n, seed, scale);
  LAB_CUDA_LAUNCH_CHECK("FillHalf");
}
void Fill(float* p, size_t n, uint32_t seed, float scale, float offset) {
  FillFloat<<<1024, 256>>>(p, n, seed, scale, offset);
  LAB_CUDA_LAUNCH_CHECK("FillFloat");
}

// launch(i) enqueues the i-th launch on `s`. Per-launch time over `reps` samples of a batch.
Timing TimeLaunches(const std::function<void(int)>& launch, cudaStream_t s, int reps, double target_us) {
  cudaEvent_t e0, e1;
  LAB_CUDA_CHECK(cudaEventCreate(&e0));
  LAB_CUDA_CHECK(cudaEventCreate(&e1));
  int counter = 0;
  for (int i = 0; i < 2; ++i) launch(counter++);
  LAB_CUDA_CHECK(cudaEventRecord(e0, s));
  launch(counter++);
  LAB_CUDA_CHECK(cudaEventRecord(e1, s));
  LAB_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  LAB_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  Timing t;
  t.per_sample = std::max(1, std::min(64, int(std::ceil(target_us / std::max(1.0, ms * 1e3)))));
  std::vector<double> v;
  for (int r = 0; r < reps; ++r) {
    LAB_CUDA_CHECK(cudaEventRecord(e0, s));
    for (int i = 0; i < t.per_sample; ++i) launch(counter++);
    LAB_CUDA_CHECK(cudaEventRecord(e1, s));
    LAB_CUDA_CHECK(cudaEventSynchronize(e1));
    LAB_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    v.push_back(ms * 1e3 / t.per_sample);
  }
  std::sort(v.begin(), v.end());
  t.med_us = v[v.size() / 2];
  t.min_us = v.front();
  t.max_us = v.back();
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return t;
}

double RelErr(const std::vector<float>& got, const std::vector<double>& ref, bool* all_written) {
  double num = 0, den = 0;
  *all_written = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) *all_written = false;
    const double d = double(got[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return *all_written ? std::sqrt(num / std::max(den, 1e-300)) : INFINITY;
}

// fp64 y = W x on the host, W as fp16 bits.
std::vector<double> HostMatvec(const std::vector<uint16_t>& W, const std::vector<float>& x, int M, int K) {
  std::vector<double> xf(x.begin(), x.end()), y(M);
  std::vector<float> lut(65536);
  for (uint32_t i = 0; i < 65536; ++i) lut[i] = __half2float(__ushort_as_half(uint16_t(i)));
  for (int i = 0; i < M; ++i) {
    const uint16_t* w = W.data() + size_t(i) * K;
    double acc = 0;
    for (int j = 0; j < K; ++j) acc += double(lut[w[j]]) * xf[j];
    y[i] = acc;
  }
  return y;
}

}  // namespace kbench

namespace {
using namespace kbench;

struct Row {
  std::string version, shape;
  int M = 0, K = 0;
  double bytes = 0, rel_err = 0;
  bool ok = false;
  Timing t;
};

std::string JsonStr(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') r += '\\';
    r += c;
  }
  return r + "\"";
}

}  // namespace
}  // namespace lab

int main(int argc, char** argv) {
  using namespace lab;
  std::string out_dir = ".", model;
  std::vector<int> ctxs = {512, 2048};
  int reps = 15;
  bool chain = true, naive = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out") out_dir = next();
    else if (a == "--model_dir") model = next();
    else if (a == "--reps") reps = std::atoi(next().c_str());
    else if (a == "--no-chain") chain = false;
    else if (a == "--naive") naive = true;
    else if (a == "--ctx") {
      ctxs.clear();
      std::string s = next();
      for (size_t p = 0; p < s.size();) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        ctxs.push_back(std::atoi(s.substr(p, q - p).c_str()));
        p = q + 1;
      }
    } else {
      std::fprintf(stderr, "usage: kernel_bench --out DIR [--reps N] [--model_dir DIR [--ctx 512,2048] [--naive]] [--no-chain]\n");
      return 2;
    }
  }
  try {
    const cudaDeviceProp prop = lab::cuda::RequireGpu("kernel_bench");
    cudaStream_t s;
    LAB_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    std::printf("kernel_bench on %s (%d SMs, %.0f GiB, L2 %d MiB), %s\n", prop.name, prop.multiProcessorCount,
                prop.totalGlobalMem / 1073741824.0, prop.l2CacheSize >> 20, date);

    // ---- ceilings ----
    const size_t cbytes = size_t(2) << 30;
    char *ca = nullptr, *cb = nullptr;
    unsigned* sink = nullptr;
    LAB_CUDA_CHECK(cudaMalloc(&ca, cbytes));
    LAB_CUDA_CHECK(cudaMalloc(&cb, cbytes / 2));
    LAB_CUDA_CHECK(cudaMalloc(&sink, 4));
    Fill(reinterpret_cast<__half*>(ca), cbytes / 2, 7, 1.f);
    LAB_CUDA_CHECK(cudaDeviceSynchronize());
    const Timing tc = TimeLaunches(
        [&](int) { LAB_CUDA_CHECK(cudaMemcpyAsync(cb, ca, cbytes / 2, cudaMemcpyDeviceToDevice, s)); }, s, reps, 1);
    const double copy_gbps = double(cbytes) / (tc.med_us * 1e-6) / 1e9;  // read + write
    const Timing tr = TimeLaunches(
        [&](int) {
          // The shared ceiling kernel (cuda/common/read_ceiling.h), in its original launch shape.
          lab::cuda::LaunchReadPass(ca, cbytes, sink, 4, 8, prop.multiProcessorCount, s);
        },
        s, reps, 1);
    const double ldg_gbps = double(cbytes) / (tr.med_us * 1e-6) / 1e9;
    double tma_gbps = 0;  // the same bytes by bulk copies (sm_90+), contiguous or in 1 MB slices: the ceiling is the highest
    for (size_t slice : {size_t{0}, size_t{1} << 20}) {
      if (prop.major < 9) break;
      const Timing tt = TimeLaunches(
          [&](int) { lab::cuda::LaunchTmaReadPass(ca, cbytes, 8, 16384, prop.multiProcessorCount, s, slice); }, s, reps, 1);
      std::printf("  bulk-copy read, %s: %.0f GB/s\n", slice ? "1 MB slices" : "contiguous", double(cbytes) / (tt.med_us * 1e-6) / 1e9);
      tma_gbps = std::max(tma_gbps, double(cbytes) / (tt.med_us * 1e-6) / 1e9);
    }
    const double read_gbps = std::max(ldg_gbps, tma_gbps);
    LAB_CUDA_CHECK(cudaFree(cb));
    std::printf("ceilings: device-to-device copy %.0f GB/s (read+write), read kernel %.0f GB/s, bulk-copy read %.0f "
                "GB/s; %% of read below is of the higher\n",
                copy_gbps, ldg_gbps, tma_gbps);

    // ---- matvec versions ----
    const std::vector<Shape> shapes = {{"qkv 4096->6144", 6144, 4096},
                                       {"o_proj 4096->4096", 4096, 4096},
                                       {"gate_up 4096->2x14336", 28672, 4096},
                                       {"down 14336->4096", 4096, 14336},
                                       {"lm_head 4096->128256", 128256, 4096}};
    const size_t pool_elems = cbytes / 2;  // reuse the 2 GiB ceiling buffer as the weight pool
    __half* pool = reinterpret_cast<__half*>(ca);
    Fill(pool, pool_elems, 11, 0.05f);
    float *x = nullptr, *y = nullptr, *g = nullptr;
    LAB_CUDA_CHECK(cudaMalloc(&x, 14336 * 4));
    LAB_CUDA_CHECK(cudaMalloc(&g, 14336 * 4));
    LAB_CUDA_CHECK(cudaMalloc(&y, 128256 * 4));
    Fill(x, 14336, 3, 1.f);
    Fill(g, 14336, 5, 0.25f, 1.f);  // RMSNorm weights around 1
    LAB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> hx(14336), hg(14336);
    LAB_CUDA_CHECK(cudaMemcpy(hx.data(), x, hx.size() * 4, cudaMemcpyDeviceToHost));
    LAB_CUDA_CHECK(cudaMemcpy(hg.data(), g, hg.size() * 4, cudaMemcpyDeviceToHost));
    const auto versions = Versions();
    std::vector<Row> rows;
    bool all_ok = true;
    for (const Shape& sh : shapes) {
      const size_t elems = size_t(sh.M) * sh.K;
      const int windows = int(std::max<size_t>(1, std::min<size_t>(16, pool_elems / elems)));
      std::vector<uint16_t> hw(elems);
      LAB_CUDA_CHECK(cudaMemcpy(hw.data(), pool, elems * 2, cudaMemcpyDeviceToHost));
      const std::vector<float> xk(hx.begin(), hx.begin() + sh.K);
      const std::vector<double> ref = HostMatvec(hw, xk, sh.M, sh.K);
      const double bytes = double(elems) * 2 + sh.K * 4.0 + sh.M * 4.0;
      for (const Version& v : versions) {
        Row r;
        r.version = v.name;
        r.shape = sh.name;
        r.M = sh.M;
        r.K = sh.K;
        r.bytes = bytes;
        std::vector<float> got(sh.M);
        auto check = [&](double* err) {  // one launch on a NaN-poisoned output, against the fp64 reference
          LAB_CUDA_CHECK(cudaMemsetAsync(y, 0xff, sh.M * 4, s));
          v.run(pool, x, y, sh.M, sh.K, s);
          LAB_CUDA_CHECK(cudaStreamSynchronize(s));
          LAB_CUDA_CHECK(cudaMemcpy(got.data(), y, sh.M * 4, cudaMemcpyDeviceToHost));
          bool written = false;
          *err = RelErr(got, ref, &written);
          return written && *err < 1e-4;
        };
        r.ok = check(&r.rel_err);
        r.t = TimeLaunches([&](int i) { v.run(pool + (i % windows) * elems, x, y, sh.M, sh.K, s); }, s, reps);
        // Checked again after the timed launches: a version that leaves state behind (v11's counters) fails here.
        double again = 0;
        r.ok = check(&again) && r.ok;
        all_ok &= r.ok;
        std::printf("  %-24s %-22s %8.1f us  %6.0f GB/s  %5.1f%% of read  err %.1e %s\n", v.name.c_str(), sh.name,
                    r.t.med_us, bytes / (r.t.med_us * 1e-6) / 1e9, 100 * bytes / (r.t.med_us * 1e-6) / 1e9 / read_gbps,
                    r.rel_err, r.ok ? "ok" : "FAIL");
        rows.push_back(r);
      }
      if (sh.M == 28672) {
        // The engine's fused kernel: RMSNorm (weight g) folded in, h = SiLU(W_gate xn) * (W_up xn).
        std::vector<float> xn(sh.K);
        double ss = 0;
        for (int j = 0; j < sh.K; ++j) ss += double(hx[j]) * hx[j];
        const double inv = 1.0 / std::sqrt(ss / sh.K + 1e-5);
        for (int j = 0; j < sh.K; ++j) xn[j] = float(hx[j] * hg[j] * inv);
        const std::vector<double> yg = HostMatvec(hw, xn, sh.M, sh.K);
        const int H = sh.M / 2;
        std::vector<double> href(H);
        for (int i = 0; i < H; ++i) href[i] = yg[i] / (1.0 + std::exp(-yg[i])) * yg[H + i];
        for (const bool ring : {false, true}) {  // the engine's kernel, then the weight ring (v10)
          auto run = [&](const __half* W) {
            const gpu::MatvecParams p = GateUpParams(W, x, g, y, H, sh.K);
            if (ring)
              RunRing<8, 8, 512, gpu::kEpiGateUp>(p, s, prop.multiProcessorCount);
            else
              RunV5<4, 1, 8, gpu::kEpiGateUp>(p, s);
          };
          Row r;
          r.version = ring ? "v10 c8.s8.k512 ring fused norm+SiLU" : "v5 w4.u1.r8 fused norm+SiLU";
          r.shape = sh.name;
          r.M = sh.M;
          r.K = sh.K;
          r.bytes = double(elems) * 2 + sh.K * 8.0 + H * 4.0;
          LAB_CUDA_CHECK(cudaMemsetAsync(y, 0xff, H * 4, s));
          run(pool);
          LAB_CUDA_CHECK(cudaStreamSynchronize(s));
          std::vector<float> got(H);
          LAB_CUDA_CHECK(cudaMemcpy(got.data(), y, H * 4, cudaMemcpyDeviceToHost));
          bool written = false;
          r.rel_err = RelErr(got, href, &written);
          r.ok = written && r.rel_err < 1e-4;
          all_ok &= r.ok;
          r.t = TimeLaunches([&](int i) { run(pool + (i % windows) * elems); }, s, reps);
          std::printf("  %-24s %-22s %8.1f us  %6.0f GB/s  %5.1f%% of read  err %.1e %s\n", r.version.c_str(), sh.name,
                      r.t.med_us, r.bytes / (r.t.med_us * 1e-6) / 1e9,
                      100 * r.bytes / (r.t.med_us * 1e-6) / 1e9 / read_gbps, r.rel_err, r.ok ? "ok" : "FAIL");
          rows.push_back(r);
        }
      }
    }
    // ---- the MLP as one kernel (v14) against its two launches (bench_mlp.cu), on the pool's weights ----
    if (prop.major >= 9) kbench::RunMlpLab(prop, s, pool, read_gbps, reps, &all_ok);
    LAB_CUDA_CHECK(cudaFree(ca));
    LAB_CUDA_CHECK(cudaFree(sink));

    // ---- the decode step's weight stream as a chain: launches, and one persistent kernel (bench_chain.cu) ----
    std::vector<kbench::ChainRow> chain_rows;
    const double chain_bytes = chain ? kbench::RunChains(prop, s, shapes, x, read_gbps, &all_ok, &chain_rows) : 0;
    LAB_CUDA_CHECK(cudaFree(x));
    LAB_CUDA_CHECK(cudaFree(y));
    LAB_CUDA_CHECK(cudaFree(g));

    // ---- engines ----
    struct EngineRow {
      std::string engine;
      int ctx = 0;
      double wall_ms = 0, device_ms = 0, bytes = 0, prefill_s = 0;
    };
    std::vector<EngineRow> erows;
    if (!model.empty()) {
      const int max_ctx = *std::max_element(ctxs.begin(), ctxs.end()) + 64;
      std::mt19937 rng(1);
      struct Run {
        std::string name, label;
        std::vector<std::pair<const char*, const char*>> env;
        std::vector<int> ctx;
      };
      std::vector<Run> runs = {{"gpu_opt", "gpu_opt", {}, ctxs},
                               {"gpu_opt", "gpu_opt, o_proj staged (v8)", {{"LAB_GPU_O_STAGE", "w8.u2.r2.s"}}, ctxs},
                               {"gpu_opt", "gpu_opt, attention v3 (clusters)", {{"LAB_GPU_DECODE_ATTN", "v3"}}, ctxs},
                               {"gpu_opt", "gpu_opt, attention v4 (tensor cores)", {{"LAB_GPU_ATTN_MMA", "1"}}, ctxs},
                               {"gpu_opt", "gpu_opt, no persistent tiles", {{"LAB_GPU_PERSIST", "0"}}, ctxs},
                               {"gpu_opt", "gpu_opt, second batch after the wait", {{"LAB_GPU_EARLY", "off"}}, ctxs},
                               {"gpu_opt", "gpu_opt, L2 prefetch o_proj", {{"LAB_GPU_L2_PREFETCH", "o"}}, {ctxs[0]}},
                               {"gpu_opt", "gpu_opt, L2 prefetch all", {{"LAB_GPU_L2_PREFETCH", "all"}}, {ctxs[0]}},
                               {"gpu_opt", "gpu_opt, no PDL", {{"LAB_GPU_PDL", "0"}}, {ctxs[0]}},
                               {"gpu_opt", "gpu_opt, no graph, no PDL", {{"LAB_GPU_GRAPH", "0"}, {"LAB_GPU_PDL", "0"}},
                                {ctxs[0]}}};
      if (naive) runs.push_back({"gpu_naive", "gpu_naive", {}, {64}});
      for (const Run& run : runs) {
        const std::string name = run.name;
        for (const auto& [k, v] : run.env) setenv(k, v, 1);
        auto e = CreateEngine(name, model, name == "gpu_naive" ? 256 : max_ctx);
        for (const auto& [k, v] : run.env) unsetenv(k);
        const ModelConfig& c = e->config();
        std::uniform_int_distribution<int> tok(0, int(c.vocab_size) - 1);
        const std::vector<int> use_ctx = run.ctx;
        for (int ctx : use_ctx) {
          e->Reset();
          std::vector<int32_t> prompt(ctx - 1);
          for (auto& t : prompt) t = tok(rng);
          e->Prefill(prompt);
          EngineRow r;
          r.engine = run.label;
          r.ctx = ctx;
          r.prefill_s = e->stats().last_prefill_s;
          const int warm = name == "gpu_naive" ? 1 : 3, n = name == "gpu_naive" ? 4 : 24;
          std::vector<double> wall, dev;
          for (int i = 0; i < warm + n; ++i) {
            e->Decode(tok(rng));
            if (i >= warm) {
              wall.push_back(e->stats().last_decode_s * 1e3);
              dev.push_back(GpuOptLastDecodeDeviceMs(*e));
            }
          }
          std::sort(wall.begin(), wall.end());
          std::sort(dev.begin(), dev.end());
          r.wall_ms = wall[wall.size() / 2];
          r.device_ms = dev[dev.size() / 2];
          // Bytes a decode step must read: every weight except the embedding table (only one row of it
          // is gathered), plus the KV cache up to the context (both at the engine's precision).
          const double es = name == "gpu_naive" ? 4 : 2;
          const double embed = c.tie_word_embeddings ? 0 : double(c.vocab_size) * c.dim * es;
          r.bytes = double(e->stats().weight_bytes) - embed + 2.0 * c.n_layers * (ctx + 0.5 * n) * c.kv_dim() * es;
          std::printf("  engine %-26s ctx %5d: decode %.3f ms wall (%.1f tok/s), %.3f ms device, %.0f GB/s wall = "
                      "%.1f%% of read; prefill of %d tokens %.3f s\n",
                      r.engine.c_str(), ctx, r.wall_ms, 1e3 / r.wall_ms, r.device_ms, r.bytes / (r.wall_ms * 1e-3) / 1e9,
                      100 * r.bytes / (r.wall_ms * 1e-3) / 1e9 / read_gbps, ctx - 1, r.prefill_s);
          erows.push_back(r);
        }
      }
    }

    // ---- write JSON + markdown ----
    std::string md, js;
    char buf[512];
    std::snprintf(buf, sizeof(buf),
                  "Card: **%s** (%d SMs), %s. Ceilings measured in this run: device-to-device copy **%.0f GB/s** "
                  "(read+write), read **%.0f GB/s** (the higher of the load kernel's %.0f and bulk copies' %.0f). Times: "
                  "median per launch of %d samples (min-max).\n\n",
                  prop.name, prop.multiProcessorCount, date, copy_gbps, read_gbps, ldg_gbps, tma_gbps, reps);
    md += buf;
    md += "| version | shape | median us (min-max) | GB/s | % of read | % of copy | rel err vs fp64 |\n";
    md += "| --- | --- | --- | --- | --- | --- | --- |\n";
    js += "{\n  \"device\": " + JsonStr(prop.name) + ",\n  \"date\": " + JsonStr(date) + ",\n";
    std::snprintf(buf, sizeof(buf),
                  "  \"copy_gbps\": %.1f,\n  \"read_gbps\": %.1f,\n  \"ldg_read_gbps\": %.1f,\n  \"tma_read_gbps\": %.1f,\n"
                  "  \"matvec\": [\n",
                  copy_gbps, read_gbps, ldg_gbps, tma_gbps);
    js += buf;
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      const double gbps = r.bytes / (r.t.med_us * 1e-6) / 1e9;
      std::snprintf(buf, sizeof(buf), "| %s | %s | %.1f (%.1f-%.1f) | %.0f | %.1f%% | %.1f%% | %.1e%s |\n",
                    r.version.c_str(), r.shape.c_str(), r.t.med_us, r.t.min_us, r.t.max_us, gbps, 100 * gbps / read_gbps,
                    100 * gbps / copy_gbps, r.rel_err, r.ok ? "" : " FAIL");
      md += buf;
      std::snprintf(buf, sizeof(buf),
                    "    {\"version\": %s, \"shape\": %s, \"M\": %d, \"K\": %d, \"bytes\": %.0f, \"median_us\": %.3f, "
                    "\"min_us\": %.3f, \"max_us\": %.3f, \"gbps\": %.1f, \"pct_read\": %.2f, \"pct_copy\": %.2f, "
                    "\"rel_err\": %.3e, \"ok\": %s}%s\n",
                    JsonStr(r.version).c_str(), JsonStr(r.shape).c_str(), r.M, r.K, r.bytes, r.t.med_us, r.t.min_us,
                    r.t.max_us, gbps, 100 * gbps / read_gbps, 100 * gbps / copy_gbps, std::isfinite(r.rel_err) ? r.rel_err : -1.0,
                    r.ok ? "true" : "false", i + 1 < rows.size() ? "," : "");
      js += buf;
    }
    js += "  ],\n  \"chain\": [\n";
    if (!chain_rows.empty()) {
      std::snprintf(buf, sizeof(buf),
                    "\nDecode-step weight stream (32 x [qkv, o, gate/up, down] + lm_head = %.2f GB, v5 w8.u1.r4, no "
                    "attention):\n\n| launched from | median us (min-max) | GB/s | %% of read |\n| --- | --- | --- | --- |\n",
                    chain_bytes / 1e9);
      md += buf;
    }
    for (size_t i = 0; i < chain_rows.size(); ++i) {
      const ChainRow& c = chain_rows[i];
      const double gbps = chain_bytes / (c.t.med_us * 1e-6) / 1e9;
      std::snprintf(buf, sizeof(buf), "| %s | %.0f (%.0f-%.0f) | %.0f | %.1f%% |\n", c.how.c_str(), c.t.med_us,
                    c.t.min_us, c.t.max_us, gbps, 100 * gbps / read_gbps);
      md += buf;
      std::snprintf(buf, sizeof(buf), "    {\"how\": %s, \"bytes\": %.0f, \"median_us\": %.1f, \"gbps\": %.1f, \"pct_read\": %.2f}%s\n",
                    JsonStr(c.how).c_str(), chain_bytes, c.t.med_us, gbps, 100 * gbps / read_gbps,
                    i + 1 < chain_rows.size() ? "," : "");
      js += buf;
    }
    js += "  ],\n  \"engines\": [\n";
    if (!erows.empty())
      md += "\nEngine decode (random-weight model at " + model +
            "):\n\n| engine | context | ms/token wall | tok/s wall | ms/token device | GB/s (wall) | % of read | "
            "prefill s |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for (size_t i = 0; i < erows.size(); ++i) {
      const EngineRow& r = erows[i];
      const double gbps = r.bytes / (r.wall_ms * 1e-3) / 1e9;
      std::snprintf(buf, sizeof(buf), "| %s | %d | %.3f | %.1f | %.3f | %.0f | %.1f%% | %.3f |\n", r.engine.c_str(), r.ctx,
                    r.wall_ms, 1e3 / r.wall_ms, r.device_ms, gbps, 100 * gbps / read_gbps, r.prefill_s);
      md += buf;
      std::snprintf(buf, sizeof(buf),
                    "    {\"engine\": %s, \"ctx\": %d, \"wall_ms\": %.4f, \"device_ms\": %.4f, \"tok_s\": %.2f, "
                    "\"bytes\": %.0f, \"gbps\": %.1f, \"pct_read\": %.2f, \"prefill_s\": %.4f}%s\n",
                    JsonStr(r.engine).c_str(), r.ctx, r.wall_ms, r.device_ms, 1e3 / r.wall_ms, r.bytes, gbps,
                    100 * gbps / read_gbps, r.prefill_s, i + 1 < erows.size() ? "," : "");
      js += buf;
    }
    js += "  ],\n  \"all_ok\": " + std::string(all_ok ? "true" : "false") + "\n}\n";
    std::error_code mkdir_error;  // --out may name a folder that does not exist yet
    std::filesystem::create_directories(out_dir, mkdir_error);
    for (const auto& [fname, text] : {std::make_pair(std::string("kernel_bench.json"), js),
                                      std::make_pair(std::string("kernel_bench.md"), md)}) {
      const std::string path = out_dir + "/" + fname;
      FILE* f = std::fopen(path.c_str(), "w");
      if (!f) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        return 1;
      }
      std::fputs(text.c_str(), f);
      std::fclose(f);
    }
    std::printf("\n%s\n%s\n", md.c_str(), all_ok ? "all versions correct" : "SOME VERSIONS FAILED");
    cudaStreamDestroy(s);
    return all_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);  // the rows before the error first, then the error (stdout is buffered into a log)
    std::fprintf(stderr, "kernel_bench: %s\n", e.what());
    return 1;
  }
}
