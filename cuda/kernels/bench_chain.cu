// The kernel lab's chain: a decode step's whole weight stream (32 layers of qkv, o, gate/up, down, then
// lm_head: 15 GB) as a chain of v5 launches (from the stream, a CUDA graph, a graph with programmatic
// dependent launch: what launch gaps cost, and what remains) and as one persistent kernel
// (chain_stream.cuh) with its two diagnostics; and (session 24) the ring chain with fewer boundaries: the
// same bytes in fewer, longer launches (what a kernel boundary costs the weight stream, an upper bound on
// what fusing across one would save). Called by bench.cu (kernel_bench); bench_common.cuh.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/kernels/bench_common.cuh"
#include "cuda/kernels/chain_stream.cuh"

namespace lab {
namespace kbench {

double RunChains(const cudaDeviceProp& prop, cudaStream_t s, const std::vector<Shape>& shapes, const float* x,
                 double read_gbps, bool* all_ok, std::vector<ChainRow>* chain_rows) {
  double chain_bytes = 0;
  const int L = 32;
  const Shape cs[4] = {shapes[0], shapes[1], shapes[2], shapes[3]};
  size_t total = size_t(128256) * 4096;
  for (const Shape& c : cs) total += size_t(c.M) * c.K * L;
  chain_bytes = double(total) * 2;
  __half* wts = nullptr;
  LAB_CUDA_CHECK(cudaMalloc(&wts, total * 2));
  Fill(wts, total, 13, 0.05f);
  float* y2 = nullptr;
  LAB_CUDA_CHECK(cudaMalloc(&y2, 128256 * 4));  // every matvec's output, lm_head's the longest
  NextRingWork();  // v11's counters and v12's words, allocated before the captures
  NextStealWords();
  LAB_CUDA_CHECK(cudaDeviceSynchronize());
  LAB_CUDA_CHECK(cudaFuncSetAttribute(gpu::DecodeMatvecKernel<8, 1, 4, gpu::kEpiStore>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024));
  // Same launch sequence as the engine: qkv, o, gate/up, down per layer (attention left out), lm_head.
  // ring: 0, v5 w8.u1.r4; 1..5, the weight ring (v10) in the configurations of kRing (the engine's tuner
  // has c8.s16.k256, c8.s8.k512 and c16.s16.k256); 6..8, v11, rings with a shared tail; 9..10, v12, rings
  // with stolen tails; 11..12, v10 with half the ring filled before the PDL wait (MatvecParams::ring_pre).
  static const char* kRing[13] = {"",
                                  "c8.s8.k512",
                                  "c4.s4.k512",
                                  "c8.s8.k256",
                                  "c8.s16.k256",
                                  "c16.s16.k256",
                                  "c8.s16.k256.d1",
                                  "c8.s16.k256.d2",
                                  "c16.s16.k256.d2",
                                  "c8.s16.k256.t2",
                                  "c8.s16.k256.t4",
                                  "c8.s16.k256, 8 stages before the wait,",
                                  "c16.s16.k256, 8 stages before the wait,"};
  std::string ring_error;  // the first failed ring launch of an enqueue: what, and on which shape
  // merge (ring chains only): 0, a launch per matrix (129); 1, gate/up and down as one launch of their
  // bytes (a [28672 + 14336] x 4096 matrix: down's 4096 x 14336 weights read as 14336 rows of 4096), 97
  // launches; 2, a layer's four matrices as one launch (33); 3, gate/up + SiLU + down as v14's one kernel
  // (kernels_mlp.cuh: the real math, x for input, its sums added to y2), 97 launches; 4, v14 reading
  // W_down's bytes as its column slices (BLOCKED). (The whole step as one launch does not fit: the
  // ring keeps each unit's partial sums in shared memory; the read ceiling is that bound.) Merges 1 and 2 do
  // none of a fused kernel's math (SiLU, down's products by column, the partial sums' reduction), and no
  // merge has attention: their rows bound what removing the boundaries could save.
  auto enqueue = [&](bool pdl, bool prefetch, int ring = 0, int merge = 0) {
    size_t off = 0;
    auto one = [&](int M, int K, const float* in, float* out) {
      gpu::MatvecParams p = {};
      p.W = wts + off;
      p.M = M;
      p.K = K;
      p.n_units = (M + 1) / 2;
      p.x = in;
      p.out = out;
      p.l2_prefetch = prefetch ? 1 : 0;
      p.ring_pre = ring >= 11 ? 8 : 0;
      off += size_t(M) * K;
      const int sms = prop.multiProcessorCount;
      if (ring) {
        try {
          if (ring == 1) RunRing<8, 8, 512>(p, s, sms, pdl);
          if (ring == 2) RunRing<4, 4, 512>(p, s, sms, pdl);
          if (ring == 3) RunRing<8, 8, 256>(p, s, sms, pdl);
          if (ring == 4) RunRing<8, 16, 256>(p, s, sms, pdl);
          if (ring == 5) RunRing<16, 16, 256>(p, s, sms, pdl);
          if (ring == 6) RunRing<8, 16, 256, gpu::kEpiStore, 1>(p, s, sms, pdl);
          if (ring == 7) RunRing<8, 16, 256, gpu::kEpiStore, 2>(p, s, sms, pdl);
          if (ring == 8) RunRing<16, 16, 256, gpu::kEpiStore, 2>(p, s, sms, pdl);
          if (ring == 9) RunRing<8, 16, 256, gpu::kEpiStore, 2, true>(p, s, sms, pdl);
          if (ring == 10) RunRing<8, 16, 256, gpu::kEpiStore, 4, true>(p, s, sms, pdl);
          if (ring == 11) RunRing<8, 16, 256>(p, s, sms, pdl);
          if (ring == 12) RunRing<16, 16, 256>(p, s, sms, pdl);
        } catch (const std::exception& e) {  // DeviceError; v12's grid bound
          if (ring_error.empty())
            ring_error = std::string(e.what()) + " at M " + std::to_string(M) + ", K " + std::to_string(K) +
                         (pdl ? ", with PDL" : ", no PDL");
        }
        return;
      }
      gpu_opt::Launch(gpu::DecodeMatvecKernel<8, 1, 4, gpu::kEpiStore>, dim3(unsigned((p.n_units + 7) / 8)), dim3(256),
                      gpu::MatvecSmemBytes(K), s, pdl, "DecodeMatvecKernel", p);
    };
    for (int l = 0; l < L; ++l) {
      if (merge == 2) {
        one(6144 + 4096 + 28672 + 14336, 4096, x, y2);
        continue;
      }
      one(6144, 4096, x, y2);
      one(4096, 4096, x, y2);
      if (merge == 1) {
        one(28672 + 14336, 4096, x, y2);
        continue;
      }
      if (merge >= 3) {
        gpu::MlpParams q = {};
        q.Wgu = wts + off;
        q.x = x;
        q.K = 4096;
        q.H = 14336;
        q.out = y2;
        q.Wdb = q.Wgu + size_t(28672) * 4096;  // merge 4: the same bytes read as W_down's slices
        off += size_t(28672 + 14336) * 4096;
        try {
          if (merge == 3) RunMlp<8, 16, 256>(q, q.Wdb, s, prop.multiProcessorCount, pdl);
          if (merge == 4) RunMlp<8, 16, 256, true>(q, q.Wdb, s, prop.multiProcessorCount, pdl);
        } catch (const std::exception& e) {
          if (ring_error.empty()) ring_error = std::string(e.what()) + " (v14)";
        }
        continue;
      }
      one(28672, 4096, x, y2);
      one(4096, 14336, x, y2);
    }
    one(128256, 4096, x, y2);
  };
  chain_rows->push_back({"stream, no graph", TimeLaunches([&](int) { enqueue(false, false); }, s, 5, 1)});
  // Variants 3..7: the same graph + PDL chain of v10 weight rings (sm_90+: bulk copies); 8: the first
  // of them without PDL; 9..11: v11's rings with a shared tail, 12..13: v12's with stolen tails, 14..15: v10
  // with ring_pre, graph + PDL; 16..19: v10 c8.s16.k256, then c16.s16.k256, graph + PDL, with merges 1 and 2;
  // 20, 21: v10 c8.s16.k256 with v14's MLP (merge 3: W_down by 2-D boxes; 4: in slices).
  const int variants = prop.major >= 9 ? 22 : 3;
  static const char* kMerge[5] = {"", ", gate/up + down one launch", ", a layer one launch",
                                  ", v14 MLP (gate/up + SiLU + down one kernel)", ", v14 MLP, W_down in slices"};
  for (int variant = 0; variant < variants; ++variant) {
    const bool pdl = variant >= 1 && variant != 8, prefetch = variant == 2;
    const int merge = variant >= 20 ? variant - 17 : variant >= 16 ? (variant - 16) % 2 + 1 : 0;
    const int ring = variant >= 16 ? (variant < 18 || variant >= 20 ? 4 : 5)
                                   : variant == 8 ? 1 : variant >= 9 ? variant - 3 : variant >= 3 ? variant - 2 : 0;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ring_error.clear();
    LAB_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    enqueue(pdl, prefetch, ring, merge);
    const cudaError_t ce = cudaStreamEndCapture(s, &graph);
    if (!ring_error.empty() || ce != cudaSuccess) {
      std::printf("  chain v10/v11 %s ring%s: skipped (%s)\n", kRing[ring], pdl ? " + PDL" : "",
                  ring_error.empty() ? cudaGetErrorString(ce) : ring_error.c_str());
      (void)cudaGetLastError();
      if (ce == cudaSuccess) cudaGraphDestroy(graph);
      continue;
    }
    LAB_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    static const char* kHow[3] = {"CUDA graph", "CUDA graph + PDL", "CUDA graph + PDL + L2 prefetch"};
    const std::string how = ring ? std::string(pdl ? "graph + PDL, " : "graph, ") +
                                       (ring >= 11 ? "v10 " : ring >= 9 ? "v12 " : ring >= 6 ? "v11 " : "v10 ") +
                                       kRing[ring] + " ring" + kMerge[merge]
                                 : kHow[variant];
    chain_rows->push_back({how, TimeLaunches([&](int) { LAB_CUDA_CHECK(cudaGraphLaunch(exec, s)); }, s, 7, 1)});
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  // The same stream as one persistent kernel (chain_stream.cuh): every output checked against v5 first.
  {
    std::vector<kernels::ChainMat> hm;
    size_t woff = 0, yn = 0;
    for (int l = 0; l <= L; ++l)
      for (int k = 0; k < (l < L ? 4 : 1); ++k) {
        const Shape& c = l < L ? cs[k] : shapes[4];
        hm.push_back({wts + woff, c.M, c.K, nullptr});
        woff += size_t(c.M) * c.K;
        yn += c.M;
      }
    const std::string unfit = kernels::ChainStreamUnfit(prop, hm.data(), int(hm.size()));
    if (!unfit.empty()) std::printf("  chain as one persistent kernel: skipped (%s)\n", unfit.c_str());
    if (unfit.empty()) {
      float *ys = nullptr, *yr = nullptr;
      kernels::ChainMat* dm = nullptr;
      unsigned* bar = nullptr;
      LAB_CUDA_CHECK(cudaMalloc(&ys, yn * 4));
      LAB_CUDA_CHECK(cudaMalloc(&yr, yn * 4));
      LAB_CUDA_CHECK(cudaMalloc(&bar, 4));
      LAB_CUDA_CHECK(cudaMemset(ys, 0xff, yn * 4));  // NaN: an output never written fails the check
      for (size_t i = 0, yo = 0; i < hm.size(); yo += hm[i].M, ++i) {
        hm[i].y = ys + yo;
        RunV5<8, 1, 4>(PlainParams(hm[i].W, x, yr + yo, hm[i].M, hm[i].K), s);
      }
      LAB_CUDA_CHECK(cudaMalloc(&dm, hm.size() * sizeof(kernels::ChainMat)));
      LAB_CUDA_CHECK(cudaMemcpy(dm, hm.data(), hm.size() * sizeof(kernels::ChainMat), cudaMemcpyHostToDevice));
      const int n = int(hm.size()), sms = prop.multiProcessorCount;
      LAB_CUDA_CHECK(kernels::LaunchChainStream(dm, n, x, bar, sms, s));
      LAB_CUDA_CHECK(cudaStreamSynchronize(s));
      std::vector<float> got(yn), want(yn);
      LAB_CUDA_CHECK(cudaMemcpy(got.data(), ys, yn * 4, cudaMemcpyDeviceToHost));
      LAB_CUDA_CHECK(cudaMemcpy(want.data(), yr, yn * 4, cudaMemcpyDeviceToHost));
      double worst = 0;  // the largest relative L2 error of one matrix's output against v5's
      for (size_t i = 0, yo = 0; i < hm.size(); yo += hm[i].M, ++i) {
        double e2 = 0, r2 = 0;
        for (int r = 0; r < hm[i].M; ++r) {
          const double d = double(got[yo + r]) - want[yo + r];
          e2 += std::isfinite(got[yo + r]) ? d * d : 1e300;
          r2 += double(want[yo + r]) * want[yo + r];
        }
        worst = std::max(worst, std::sqrt(e2 / std::max(r2, 1e-300)));
      }
      const bool ok = worst < 1e-4;
      *all_ok &= ok;
      std::printf("  chain as one persistent kernel: %d matrices checked against v5, worst relative error %.1e %s\n", n,
                  worst, ok ? "ok" : "FAIL");
      static const char* kMode[3] = {"one persistent kernel", "  the same, no grid barrier (diagnostic)",
                                     "  its weight ring alone (diagnostic)"};
      for (int mode = 0; ok && mode < 3; ++mode)
        chain_rows->push_back({kMode[mode], TimeLaunches([&](int) {
                                LAB_CUDA_CHECK(kernels::LaunchChainStream(dm, n, x, bar, sms, s, mode));
                              }, s, 7, 1)});
      LAB_CUDA_CHECK(cudaFree(ys));
      LAB_CUDA_CHECK(cudaFree(yr));
      LAB_CUDA_CHECK(cudaFree(dm));
      LAB_CUDA_CHECK(cudaFree(bar));
    }
  }
  for (const ChainRow& c : *chain_rows)
    std::printf("  chain %-20s %8.0f us  %6.0f GB/s  %5.1f%% of read\n", c.how.c_str(), c.t.med_us,
                chain_bytes / (c.t.med_us * 1e-6) / 1e9, 100 * chain_bytes / (c.t.med_us * 1e-6) / 1e9 / read_gbps);
  LAB_CUDA_CHECK(cudaFree(wts));
  LAB_CUDA_CHECK(cudaFree(y2));
  return chain_bytes;
}

}  // namespace kbench
}  // namespace lab
