// AdamW on CUDA: a grid-stride elementwise update (memory bound: 16 bytes read and 12-14
// written per parameter). The gradient norm: a fixed grid per tensor writes per-block sums of
// squares, and one block adds those in order in double, so the norm is bitwise reproducible.
#include <cmath>

#include "kernels/adamw.h"
#include "kernels/backends.h"
#include "kernels/cuda/common.cuh"

namespace onn {

using namespace cuda_kernels;

namespace {

constexpr int kNormBlocks = 256;

template <typename G, typename C>
__global__ void adamw_kernel(float* __restrict__ p, const G* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, C* __restrict__ copy, int64_t n, float b1, float omb1,
                             float b2, float omb2, float step_size, float bc2_sqrt, float eps, float decay, float grad_scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gi = to_f(g[i]) * grad_scale;
    const float mi = b1 * m[i] + omb1 * gi;
    const float vi = b2 * v[i] + omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    p[i] = pi;
    if (copy) copy[i] = from_f<C>(pi);
  }
}

template <typename T>
__global__ void sum_squares_kernel(const T* __restrict__ x, int64_t n, float* __restrict__ out) {
  float s = 0.0f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float f = to_f(x[i]);
    s += f * f;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(const float* __restrict__ partial, int64_t n, double* __restrict__ out) {
  __shared__ double sh[256];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  sh[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int k = 0; k < static_cast<int>(blockDim.x); ++k) total += sh[k];
    out[0] = total;
  }
}

}  // namespace

void adamw_cuda(Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                Tensor* param_copy) {
  const int64_t n = param.numel();
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(cfg.beta1, static_cast<double>(cfg.step));
  const double bc2 = 1.0 - std::pow(cfg.beta2, static_cast<double>(cfg.step));
  const float step_size = static_cast<float>(cfg.lr / bc1), bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = static_cast<float>(1.0 - cfg.lr * cfg.weight_decay);
  const float b1 = static_cast<float>(cfg.beta1), b2 = static_cast<float>(cfg.beta2), eps = static_cast<float>(cfg.eps);
  const float grad_scale = static_cast<float>(cfg.grad_scale);
  // 1 - beta in double, then rounded: 1.0f - float(0.999) is 1.3e-5 away from 0.001.
  const float omb1 = static_cast<float>(1.0 - cfg.beta1), omb2 = static_cast<float>(1.0 - cfg.beta2);
  dispatch_float(grad.dtype(), "adamw_step", [&](auto tg) {
    using G = decltype(tg);
    const auto launch = [&](auto* copy) {
      adamw_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(ptr<float>(param), ptr<const G>(grad),
                                                                  ptr<float>(m), ptr<float>(v), copy, n, b1, omb1, b2, omb2,
                                                                  step_size, bc2_sqrt, eps, decay, grad_scale);
    };
    if (param_copy == nullptr)
      launch(static_cast<bf16*>(nullptr));
    else if (param_copy->dtype() == DType::bf16)
      launch(ptr<bf16>(*param_copy));
    else
      launch(ptr<float>(*param_copy));
    ONN_CUDA_CHECK_LAUNCH();
  });
}

double global_sum_squares_cuda(Context& ctx, const std::vector<const Tensor*>& grads) {
  const int64_t slots = static_cast<int64_t>(grads.size()) * kNormBlocks;
  if (slots == 0) return 0.0;
  Tensor partial = Tensor::empty(Shape{slots}, DType::f32, ctx.allocator());
  partial.fill_bytes(0, &ctx.compute());
  for (size_t k = 0; k < grads.size(); ++k) {
    const Tensor& g = *grads[k];
    if (g.numel() == 0) continue;
    dispatch_float(g.dtype(), "global_grad_norm", [&](auto t) {
      using T = decltype(t);
      sum_squares_kernel<T><<<kNormBlocks, kThreads, 0, stream_of(ctx)>>>(ptr<const T>(g), g.numel(),
                                                                          ptr<float>(partial) + k * kNormBlocks);
      ONN_CUDA_CHECK_LAUNCH();
    });
  }
  Tensor total = Tensor::empty(Shape{1}, DType::f64, ctx.allocator());
  sum_partials_kernel<<<1, 256, 0, stream_of(ctx)>>>(ptr<const float>(partial), slots,
                                                     ptr<double>(total));
  ONN_CUDA_CHECK_LAUNCH();
  const Tensor host = total.to(Device::cpu(), &ctx.compute());
  ctx.synchronize();
  return *static_cast<const double*>(host.data());
}

}  // namespace onn
