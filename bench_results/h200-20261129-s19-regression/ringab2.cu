// Old (063c20c) against new ring kernel and three edits of the new one; alternating launches.
#include "oldsrc/cuda/gpu_opt/kernels_matvec_ring.cuh"
#include "cuda/gpu_opt/kernels_matvec_ring.cuh"
#include "vA/cuda/gpu_opt/kernels_matvec_ring.cuh"
#include "vB/cuda/gpu_opt/kernels_matvec_ring.cuh"
#include "vC/cuda/gpu_opt/kernels_matvec_ring.cuh"
#include "vD/cuda/gpu_opt/kernels_matvec_ring.cuh"
#include <cstdio>
#include <vector>
#include <algorithm>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)
template <class NS_P, class F>
float Time(F f, const NS_P& p, int G, size_t smem, cudaStream_t s, cudaEvent_t a, cudaEvent_t b) {
  cudaEventRecord(a, s);
  for (int i = 0; i < 10; ++i) f<<<G, 9 * 32, smem, s>>>(p);
  cudaEventRecord(b, s);
  cudaEventSynchronize(b);
  float ms;
  cudaEventElapsedTime(&ms, a, b);
  return ms * 100.f;
}
#define SETP(p) p.W = W; p.M = sh.M; p.K = sh.K; p.n_units = (sh.M + 1) / 2; p.x = x; p.out = y;
namespace probe {
__global__ void Base(unsigned* out) { extern __shared__ float4 dyn[]; out[0] = unsigned(__cvta_generic_to_shared(dyn)); }
}
int main() {
  int G; cudaDeviceGetAttribute(&G, cudaDevAttrMultiProcessorCount, 0);
  struct Shape { const char* n; int M, K; } shapes[] = {{"gate_up", 28672, 4096}, {"lm_head", 128256, 4096}};
  for (auto sh : shapes) {
    __half* W; float *x, *y;
    CK(cudaMalloc(&W, size_t(sh.M) * sh.K * 2)); CK(cudaMemset(W, 0x11, size_t(sh.M) * sh.K * 2));
    CK(cudaMalloc(&x, sh.K * 4)); CK(cudaMemset(x, 0, sh.K * 4));
    CK(cudaMalloc(&y, sh.M * 4));
    labold::gpu::MatvecParams po = {}; lab::gpu::MatvecParams pn = {}; labA::gpu::MatvecParams pa = {};
    labB::gpu::MatvecParams pb = {}; labC::gpu::MatvecParams pc = {}; labD::gpu::MatvecParams pd = {};
    SETP(po) SETP(pn) SETP(pa) SETP(pb) SETP(pc) SETP(pd)
    auto fo = labold::gpu::RingMatvecKernel<8, 16, 256, 0>;
    auto fn = lab::gpu::RingMatvecKernel<8, 16, 256, 0>;
    auto fa = labA::gpu::RingMatvecKernel<8, 16, 256, 0>;
    auto fb = labB::gpu::RingMatvecKernel<8, 16, 256, 0>;
    auto fc = labC::gpu::RingMatvecKernel<8, 16, 256, 0>;
    auto fd = labD::gpu::RingMatvecKernel<8, 16, 256, 0>;
    size_t sm = lab::gpu::RingSmemBytes(pn, G, 16, 256);
    for (auto f : {(void*)fo, (void*)fn, (void*)fa, (void*)fb, (void*)fc, (void*)fd})
      CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)));
    cudaStream_t s; cudaStreamCreate(&s); cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    std::vector<float> t[6];
    for (int r = 0; r < 21; ++r) {
      t[0].push_back(Time(fo, po, G, sm, s, a, b)); t[1].push_back(Time(fn, pn, G, sm, s, a, b));
      t[2].push_back(Time(fa, pa, G, sm, s, a, b)); t[3].push_back(Time(fb, pb, G, sm, s, a, b));
      t[4].push_back(Time(fc, pc, G, sm, s, a, b)); t[5].push_back(Time(fd, pd, G, sm, s, a, b));
    }
    CK(cudaGetLastError());
    const char* names[6] = {"old 063c20c", "new HEAD", "new, no pre check", "new, no go init/arrive", "new, no norm_early", "new, ring 128-B aligned"};
    for (int i = 0; i < 6; ++i) { std::sort(t[i].begin(), t[i].end()); printf("%-8s %-24s %.1f us\n", sh.n, names[i], t[i][10]); }
    cudaFree(W); cudaFree(x); cudaFree(y);
  }
  return 0;
}
