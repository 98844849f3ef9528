// The kernel lab's MLP (v14, cuda/gpu_opt/kernels_mlp.cuh): gate/up, SiLU and down in one launch, checked
// against the fp64 host reference, then timed against the two launches it replaces: v10's gate_up ring with
// the norm and SiLU fused (h in fp32), then v10's down ring, the second launched with PDL behind the first.
// v14 runs with W_down read both ways (2-D boxes of the row-major matrix; the column slices laid out one
// after another, made here on the host), and each phase alone (diagnostics, unchecked) beside v10's halves.
// Called by bench.cu (kernel_bench); bench_common.cuh.
#include <cmath>
#include <cstdio>
#include <exception>
#include <vector>

#include "cuda/kernels/bench_common.cuh"

namespace lab {
namespace kbench {

void RunMlpLab(const cudaDeviceProp& prop, cudaStream_t s, __half* pool, double read_gbps, int reps, bool* all_ok) {
  const int K = 4096, H = 14336, sms = prop.multiProcessorCount;
  const size_t ngu = size_t(2) * H * K, nd = size_t(K) * H;
  const __half* Wgu = pool;
  const __half* Wd = pool + ngu;
  float *x = nullptr, *ones = nullptr, *h = nullptr, *out = nullptr, *base = nullptr;
  LAB_CUDA_CHECK(cudaMalloc(&x, K * 4));
  LAB_CUDA_CHECK(cudaMalloc(&ones, K * 4));
  LAB_CUDA_CHECK(cudaMalloc(&h, H * 4));
  LAB_CUDA_CHECK(cudaMalloc(&out, K * 4));
  LAB_CUDA_CHECK(cudaMalloc(&base, K * 4));
  Fill(x, K, 23, 1.f);
  Fill(ones, K, 29, 0.f, 1.f);  // the folded norm's weights: ones, so that v10's ring applies the scale alone
  Fill(base, K, 31, 1.f);       // the residual v14 adds to: random, never zeros
  LAB_CUDA_CHECK(cudaDeviceSynchronize());

  // fp64 reference: xn = x / rms(x); h = SiLU(W_gate xn) * (W_up xn); y = W_down h.
  std::vector<uint16_t> hgu(ngu), hd(nd);
  std::vector<float> hx(K), hbase(K);
  LAB_CUDA_CHECK(cudaMemcpy(hgu.data(), Wgu, ngu * 2, cudaMemcpyDeviceToHost));
  LAB_CUDA_CHECK(cudaMemcpy(hd.data(), Wd, nd * 2, cudaMemcpyDeviceToHost));
  LAB_CUDA_CHECK(cudaMemcpy(hx.data(), x, K * 4, cudaMemcpyDeviceToHost));
  LAB_CUDA_CHECK(cudaMemcpy(hbase.data(), base, K * 4, cudaMemcpyDeviceToHost));
  double ss = 0;
  for (float v : hx) ss += double(v) * v;
  const double inv = 1.0 / std::sqrt(ss / K + 1e-5);
  std::vector<float> xn(K);
  for (int j = 0; j < K; ++j) xn[j] = float(hx[j] * inv);
  const std::vector<double> yg = HostMatvec(hgu, xn, 2 * H, K);
  std::vector<float> href(H);
  for (int i = 0; i < H; ++i) href[i] = float(yg[i] / (1.0 + std::exp(-yg[i])) * yg[H + i]);
  const std::vector<double> yref = HostMatvec(hd, href, K, H);
  // W_down in v14's BLOCKED layout: block b's columns [u0, u0 + nu) as a [K, nu] matrix from element K u0.
  const int G = gpu::MlpGrid(sms, H), ng = H / 8;
  std::vector<uint16_t> hdb(nd);
  for (int b = 0; b < G; ++b) {
    const int u0 = 8 * int(int64_t(ng) * b / G), nu = 8 * int(int64_t(ng) * (b + 1) / G) - u0;
    for (int r = 0; r < K; ++r)
      for (int c = 0; c < nu; ++c) hdb[size_t(K) * u0 + size_t(r) * nu + c] = hd[size_t(r) * H + u0 + c];
  }
  __half* Wdb = nullptr;
  LAB_CUDA_CHECK(cudaMalloc(&Wdb, nd * 2));
  LAB_CUDA_CHECK(cudaMemcpy(Wdb, hdb.data(), nd * 2, cudaMemcpyHostToDevice));

  gpu::MlpParams q = {};
  q.Wgu = Wgu;
  q.x = x;
  q.K = K;
  q.H = H;
  q.rms = 1;
  q.eps = 1e-5f;
  q.out = out;
  q.Wdb = Wdb;
  auto v14 = [&](bool pdl) { RunMlp<8, 16, 256>(q, Wd, s, sms, pdl); };
  auto v14b = [&](bool pdl) { RunMlp<8, 16, 256, true>(q, Wd, s, sms, pdl); };
  auto v14b24 = [&](bool pdl) { RunMlp<8, 24, 256, true>(q, Wd, s, sms, pdl); };
  gpu::MlpParams qa = q, qb = q;  // diagnostics: one phase alone
  qa.only = 1;
  qb.only = 2;
  auto v14a = [&](bool pdl) { RunMlp<8, 16, 256, true>(qa, Wd, s, sms, pdl); };
  auto v14bo = [&](bool pdl) { RunMlp<8, 16, 256, true>(qb, Wd, s, sms, pdl); };
  auto gu = [&](bool pdl) {  // v10 gate_up alone (the first half of the pair)
    RunRing<8, 16, 256, gpu::kEpiGateUp>(GateUpParams(Wgu, x, ones, h, H, K), s, sms, pdl);
  };
  auto dn = [&](bool pdl) { RunRing<8, 16, 256>(PlainParams(Wd, h, out, K, H), s, sms, pdl); };
  auto pair = [&](bool pdl) {  // v10 gate_up (norm + SiLU, h fp32), then v10 down into out
    gu(pdl);
    dn(true);
  };
  // Each checked on the output it writes: v14 adds to base (its result less base), the pair stores.
  auto check = [&](bool adds, const std::function<void()>& run, double* err) {
    if (adds)
      LAB_CUDA_CHECK(cudaMemcpy(out, base, K * 4, cudaMemcpyDeviceToDevice));
    else
      LAB_CUDA_CHECK(cudaMemset(out, 0xff, K * 4));  // NaN: an output never written fails
    run();
    LAB_CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<float> got(K);
    LAB_CUDA_CHECK(cudaMemcpy(got.data(), out, K * 4, cudaMemcpyDeviceToHost));
    if (adds)
      for (int i = 0; i < K; ++i) got[i] -= hbase[i];
    bool written = false;
    *err = RelErr(got, yref, &written);
    return written && *err < 1e-4;
  };
  const double bytes = double(ngu + nd) * 2, bgu = double(ngu) * 2, bd = double(nd) * 2;
  struct {
    const char* name;
    bool adds, checked;
    double bytes;  // the weights the row reads
    std::function<void(bool)> run;
  } rows[8] = {{"v10 gate_up + v10 down (PDL)", false, true, bytes, pair},
               {"v14 MLP one kernel (2-D boxes)", true, true, bytes, v14},
               {"v14 MLP, W_down in slices", true, true, bytes, v14b},
               {"v14 slices, 24 stages", true, true, bytes, v14b24},
               {"  v14 slices, phase A alone", true, false, bgu, v14a},
               {"  v14 slices, phase B alone", true, false, bd, v14bo},
               {"  v10 gate_up alone", true, false, bgu, gu},
               {"  v10 down alone", true, false, bd, dn}};
  std::printf("\nThe MLP (Llama-3.1-8B: K %d, H %d; %.1f MB of weights), launches back to back with PDL:\n", K, H,
              bytes / 1e6);
  for (auto& r : rows) {
    double err = 0;
    bool ok = false;
    try {
      ok = check(r.adds, [&] { r.run(false); }, &err);
      if (!r.checked) ok = true, err = NAN;  // its output is not the product
    } catch (const std::exception& e) {
      std::printf("  %-30s failed: %s\n", r.name, e.what());
      *all_ok = false;
      continue;
    }
    *all_ok &= ok;
    const Timing t = TimeLaunches([&](int) { r.run(true); }, s, reps);
    const double gbps = r.bytes / (t.med_us * 1e-6) / 1e9;
    std::printf("  %-30s %8.1f us (%.1f-%.1f)  %6.0f GB/s  %5.1f%% of read  err %.1e %s\n", r.name, t.med_us, t.min_us,
                t.max_us, gbps, 100 * gbps / read_gbps, err, ok ? "ok" : "FAIL");
  }
  LAB_CUDA_CHECK(cudaFree(x));
  LAB_CUDA_CHECK(cudaFree(ones));
  LAB_CUDA_CHECK(cudaFree(h));
  LAB_CUDA_CHECK(cudaFree(out));
  LAB_CUDA_CHECK(cudaFree(base));
  LAB_CUDA_CHECK(cudaFree(Wdb));
}

}  // namespace kbench
}  // namespace lab
