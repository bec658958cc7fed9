// Measurements for the hardware profile: copy bandwidths and the bf16 GEMM rate. Inputs are
// random (never zeros), warm-up runs come first, and the median of the timed runs is kept.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/cuda_backend.h"
#include "runtime/cuda_check.h"

namespace onn::cuda {

namespace {

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t n) { ONN_CUDA_CHECK(cudaMalloc(&p, n)); }
  ~DeviceBuffer() { cudaFree(p); }
};

template <typename F>
double median_ms(cudaStream_t s, int reps, F&& body) {
  cudaEvent_t a, b;
  ONN_CUDA_CHECK(cudaEventCreate(&a));
  ONN_CUDA_CHECK(cudaEventCreate(&b));
  body();  // warm-up
  body();
  ONN_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<float> t;
  for (int r = 0; r < std::max(reps, 1); ++r) {
    ONN_CUDA_CHECK(cudaEventRecord(a, s));
    body();
    ONN_CUDA_CHECK(cudaEventRecord(b, s));
    ONN_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    ONN_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void fill_random_bf16(std::vector<__nv_bfloat16>& v, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& e : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const float f = static_cast<float>((x >> 40) & 0xffff) / 65536.0f - 0.5f;  // [-0.5, 0.5)
    e = __float2bfloat16(f == 0.0f ? 0.25f : f);
  }
}

}  // namespace

double measure_copy_gbs(int dev, CopyKind kind, bool pinned, size_t bytes, int reps) {
  ONN_CUDA_CHECK(cudaSetDevice(dev));
  cudaStream_t s;
  ONN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  DeviceBuffer d0(bytes);
  ONN_CUDA_CHECK(cudaMemset(d0.p, 0x3c, bytes));
  double ms = 0;
  if (kind == CopyKind::device_to_device) {
    DeviceBuffer d1(bytes);
    ms = median_ms(s, reps, [&] { ONN_CUDA_CHECK(cudaMemcpyAsync(d1.p, d0.p, bytes, cudaMemcpyDeviceToDevice, s)); });
    cudaStreamDestroy(s);
    return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
  }
  void* host = nullptr;
  std::unique_ptr<char[]> pageable;
  if (pinned) {
    ONN_CUDA_CHECK(cudaHostAlloc(&host, bytes, cudaHostAllocDefault));
  } else {
    pageable.reset(new char[bytes]);
    host = pageable.get();
  }
  std::fill_n(static_cast<char*>(host), bytes, static_cast<char>(0x5a));
  const bool h2d = kind == CopyKind::host_to_device;
  const auto copy = [&] {
    if (h2d) {
      ONN_CUDA_CHECK(cudaMemcpyAsync(d0.p, host, bytes, cudaMemcpyHostToDevice, s));
    } else {
      ONN_CUDA_CHECK(cudaMemcpyAsync(host, d0.p, bytes, cudaMemcpyDeviceToHost, s));
    }
  };
  // The link first. On the H100 the profile's first measurement, host to device, read 33.5 GB/s
  // where the same copies reached 55 after a training run, and device to host, measured right
  // after it, 55.1: most likely an idle GPU's PCIe link running slower until traffic wakes it
  // (not yet confirmed on the GPU). Copies run for at least 200 ms (at most 64 of them) before
  // any is timed.
  {
    cudaEvent_t a, b;
    ONN_CUDA_CHECK(cudaEventCreate(&a));
    ONN_CUDA_CHECK(cudaEventCreate(&b));
    ONN_CUDA_CHECK(cudaEventRecord(a, s));
    float elapsed = 0;
    for (int i = 0; i < 64 && elapsed < 200.0f; ++i) {
      copy();
      ONN_CUDA_CHECK(cudaEventRecord(b, s));
      ONN_CUDA_CHECK(cudaEventSynchronize(b));
      ONN_CUDA_CHECK(cudaEventElapsedTime(&elapsed, a, b));
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  ms = median_ms(s, reps, copy);
  if (pinned) cudaFreeHost(host);
  cudaStreamDestroy(s);
  return static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
}

DuplexRate measure_duplex_gbs(int dev, size_t bytes, int reps) {
  ONN_CUDA_CHECK(cudaSetDevice(dev));
  cudaStream_t up, down;
  ONN_CUDA_CHECK(cudaStreamCreateWithFlags(&up, cudaStreamNonBlocking));
  ONN_CUDA_CHECK(cudaStreamCreateWithFlags(&down, cudaStreamNonBlocking));
  DeviceBuffer d_in(bytes), d_out(bytes);
  ONN_CUDA_CHECK(cudaMemset(d_out.p, 0x3c, bytes));
  void *h_in = nullptr, *h_out = nullptr;
  ONN_CUDA_CHECK(cudaHostAlloc(&h_in, bytes, cudaHostAllocDefault));
  ONN_CUDA_CHECK(cudaHostAlloc(&h_out, bytes, cudaHostAllocDefault));
  std::fill_n(static_cast<char*>(h_in), bytes, static_cast<char>(0x5a));
  cudaEvent_t go, up_end, down_end;
  ONN_CUDA_CHECK(cudaEventCreate(&go));
  ONN_CUDA_CHECK(cudaEventCreate(&up_end));
  ONN_CUDA_CHECK(cudaEventCreate(&down_end));
  std::vector<float> h2d, d2h;
  for (int r = 0; r < std::max(reps, 1) + 1; ++r) {  // the first round warms up
    // Both streams wait for one event so the copies start together.
    ONN_CUDA_CHECK(cudaEventRecord(go, up));
    ONN_CUDA_CHECK(cudaStreamWaitEvent(down, go, 0));
    ONN_CUDA_CHECK(cudaMemcpyAsync(d_in.p, h_in, bytes, cudaMemcpyHostToDevice, up));
    ONN_CUDA_CHECK(cudaMemcpyAsync(h_out, d_out.p, bytes, cudaMemcpyDeviceToHost, down));
    ONN_CUDA_CHECK(cudaEventRecord(up_end, up));
    ONN_CUDA_CHECK(cudaEventRecord(down_end, down));
    ONN_CUDA_CHECK(cudaEventSynchronize(up_end));
    ONN_CUDA_CHECK(cudaEventSynchronize(down_end));
    float a = 0, b = 0;
    ONN_CUDA_CHECK(cudaEventElapsedTime(&a, go, up_end));
    ONN_CUDA_CHECK(cudaEventElapsedTime(&b, go, down_end));
    if (r > 0) {
      h2d.push_back(a);
      d2h.push_back(b);
    }
  }
  cudaEventDestroy(go);
  cudaEventDestroy(up_end);
  cudaEventDestroy(down_end);
  cudaFreeHost(h_in);
  cudaFreeHost(h_out);
  cudaStreamDestroy(up);
  cudaStreamDestroy(down);
  const auto gbs = [&](std::vector<float> t) {
    std::sort(t.begin(), t.end());
    return static_cast<double>(bytes) / (t[t.size() / 2] * 1e-3) / 1e9;
  };
  return DuplexRate{gbs(h2d), gbs(d2h)};
}

double measure_bf16_gemm_tflops(int dev, int n, int reps) {
  ONN_CUDA_CHECK(cudaSetDevice(dev));
  const size_t elems = static_cast<size_t>(n) * static_cast<size_t>(n);
  const size_t bytes = elems * sizeof(__nv_bfloat16);
  DeviceBuffer a(bytes), b(bytes), c(bytes);
  std::vector<__nv_bfloat16> host(elems);
  fill_random_bf16(host, 1);
  ONN_CUDA_CHECK(cudaMemcpy(a.p, host.data(), bytes, cudaMemcpyHostToDevice));
  fill_random_bf16(host, 2);
  ONN_CUDA_CHECK(cudaMemcpy(b.p, host.data(), bytes, cudaMemcpyHostToDevice));
  cudaStream_t s;
  ONN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cublasHandle_t h;
  ONN_CUBLAS_CHECK(cublasCreate(&h));
  ONN_CUBLAS_CHECK(cublasSetStream(h, s));
  const float alpha = 1.0f, beta = 0.0f;
  const double ms = median_ms(s, reps, [&] {
    ONN_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a.p, CUDA_R_16BF, n, b.p,
                                  CUDA_R_16BF, n, &beta, c.p, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
  });
  cublasDestroy(h);
  cudaStreamDestroy(s);
  return 2.0 * n * static_cast<double>(n) * n / (ms * 1e-3) / 1e12;
}

}  // namespace onn::cuda
