// RoPE on CUDA: one thread per (token, pair) computes the angle's sine and cosine once
// (accurate sincosf: positions reach 10^5 and more) and rotates that pair in every head.
// Consecutive threads take consecutive pairs, so loads and stores coalesce.
#include "kernels/backends.h"
#include "kernels/cuda/common.cuh"
#include "kernels/rope.h"

namespace onn {

using namespace cuda_kernels;

namespace {

template <typename T>
__global__ void rope_kernel(T* x, const int32_t* __restrict__ pos, const float* __restrict__ inv_freq, int64_t n,
                            int64_t heads, int64_t d, int64_t half, bool inverse) {
  const int64_t total = n * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / half, k = idx % half;
    float s, c;
    sincosf(static_cast<float>(pos[i]) * inv_freq[k], &s, &c);
    if (inverse) s = -s;
    for (int64_t h = 0; h < heads; ++h) {
      T* row = x + (i * heads + h) * d;
      const float a = to_f(row[k]), b = to_f(row[k + half]);
      row[k] = from_f<T>(a * c - b * s);
      row[k + half] = from_f<T>(b * c + a * s);
    }
  }
}

}  // namespace

void rope_cuda(Context& ctx, Tensor& x, const Tensor& positions, const Tensor& inv_freq, bool inverse) {
  const int64_t n = x.dim(0), heads = x.dim(1), d = x.dim(2), half = inv_freq.dim(0);
  if (n == 0 || heads == 0) return;
  dispatch_float(x.dtype(), "rope", [&](auto t) {
    using T = decltype(t);
    rope_kernel<T><<<grid_for(n * half), kThreads, 0, stream_of(ctx)>>>(
        ptr<T>(x), ptr<const int32_t>(positions), ptr<const float>(inv_freq), n, heads, d, half, inverse);
    ONN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace onn
