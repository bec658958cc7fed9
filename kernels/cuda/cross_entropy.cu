// Cross-entropy on CUDA: one block per row. Pass one keeps a running (max, sum of
// exponentials) per thread over the row in vocabulary order and merges them across the block
// in a fixed order; pass two overwrites the row with the gradient. The count of valid labels
// and the mean are single-block reductions, so the loss has the same bits every run.
#include <type_traits>

#include "kernels/backends.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda/common.cuh"

namespace onn {

using namespace cuda_kernels;

namespace {

constexpr int kRowThreads = 512;

struct MaxSum {
  float m, s;
};

// Accurate expf for F32 rows (parity 1e-5), the fast intrinsic for BF16 ones.
template <typename T>
__device__ __forceinline__ float row_exp(float x) {
  if constexpr (std::is_same_v<T, float>)
    return expf(x);
  else
    return __expf(x);
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ MaxSum block_merge(MaxSum v) {
  __shared__ MaxSum partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1)
    v = merge(v, {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)});
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : MaxSum{-INFINITY, 0.0f};
  for (int o = 16; o > 0; o >>= 1)
    v = merge(v, {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)});
  return v;
}

template <typename T>
__device__ __forceinline__ void add_one(MaxSum& a, float x) {
  if (x > a.m) {
    a.s = a.s * row_exp<T>(a.m - x) + 1.0f;  // exp(-inf) = 0 on the first element
    a.m = x;
  } else if (x > -INFINITY) {  // -inf (a masked logit) adds nothing
    a.s += row_exp<T>(x - a.m);
  }
}

template <typename T, bool kVec>
__global__ void cross_entropy_kernel(T* logits, const int32_t* __restrict__ labels, const float* __restrict__ valid,
                                     float* __restrict__ token_loss, int64_t v, int32_t ignore_index, bool grad) {
  const int64_t i = blockIdx.x;
  T* row = logits + i * v;
  const int32_t label = labels[i];
  if (label == ignore_index) {
    if (threadIdx.x == 0) token_loss[i] = 0.0f;
    if (grad)
      for (int64_t j = threadIdx.x; j < v; j += blockDim.x) row[j] = from_f<T>(0.0f);
    return;
  }
  const bool in_range = label >= 0 && label < v;
  const float target = in_range ? to_f(row[label]) : NAN;  // read before pass two overwrites it
  MaxSum acc{-INFINITY, 0.0f};
  if (kVec) {
    for (int64_t j = threadIdx.x * 8; j < v; j += blockDim.x * 8) {
      float x[8];
      load8(row + j, x);
#pragma unroll
      for (int k = 0; k < 8; ++k) add_one<T>(acc, x[k]);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) add_one<T>(acc, to_f(row[j]));
  }
  acc = block_merge(acc);
  const float lse = acc.m + logf(acc.s);
  if (threadIdx.x == 0) token_loss[i] = lse - target;
  if (!grad) return;
  __syncthreads();  // every thread has read its part of the row (and the target) by now
  const float inv = 1.0f / fmaxf(valid[0], 1.0f);
  if (kVec) {
    for (int64_t j = threadIdx.x * 8; j < v; j += blockDim.x * 8) {
      float x[8];
      load8(row + j, x);
#pragma unroll
      for (int k = 0; k < 8; ++k) x[k] = (row_exp<T>(x[k] - lse) - (j + k == label ? 1.0f : 0.0f)) * inv;
      store8(row + j, x);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
      row[j] = from_f<T>((row_exp<T>(to_f(row[j]) - lse) - (j == label ? 1.0f : 0.0f)) * inv);
  }
}

// One block per row of a (T, G) granule of logits: the row's (max, sum) merged into the
// running (m, l) (old state first, so the order is the granule order), and the target logit.
template <typename T>
__global__ void vocab_stats_kernel(const T* __restrict__ logits, const int32_t* __restrict__ labels, int64_t g,
                                   int64_t v0, float* __restrict__ m, float* __restrict__ l, float* __restrict__ target,
                                   int32_t ignore_index) {
  const int64_t i = blockIdx.x;
  const int32_t label = labels[i];
  if (label == ignore_index) return;
  const T* row = logits + i * g;
  MaxSum acc{-INFINITY, 0.0f};
  for (int64_t j = threadIdx.x; j < g; j += blockDim.x) add_one<T>(acc, to_f(row[j]));
  acc = block_merge(acc);
  if (threadIdx.x == 0) {
    const MaxSum merged = merge({m[i], l[i]}, acc);
    m[i] = merged.m;
    l[i] = merged.s;
    if (label >= v0 && label < v0 + g) target[i] = to_f(row[label - v0]);
  }
}

template <typename T>
__global__ void vocab_grad_kernel(T* logits, const int32_t* __restrict__ labels, int64_t g, int64_t v0,
                                  const float* __restrict__ m, const float* __restrict__ l,
                                  const float* __restrict__ valid, int32_t ignore_index) {
  const int64_t i = blockIdx.x;
  T* row = logits + i * g;
  const int32_t label = labels[i];
  if (label == ignore_index) {
    for (int64_t j = threadIdx.x; j < g; j += blockDim.x) row[j] = from_f<T>(0.0f);
    return;
  }
  const float lse = m[i] + logf(l[i]), inv = 1.0f / fmaxf(valid[0], 1.0f);
  for (int64_t j = threadIdx.x; j < g; j += blockDim.x)
    row[j] = from_f<T>((row_exp<T>(to_f(row[j]) - lse) - (v0 + j == label ? 1.0f : 0.0f)) * inv);
}

__global__ void vocab_loss_kernel(const int32_t* __restrict__ labels, int64_t n, const float* __restrict__ m,
                                  const float* __restrict__ l, const float* __restrict__ target,
                                  float* __restrict__ token_loss, int32_t ignore_index) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  token_loss[i] = labels[i] == ignore_index ? 0.0f : m[i] + logf(l[i]) - target[i];  // NaN target: label out of range
}

__global__ void count_valid_kernel(const int32_t* __restrict__ labels, int64_t n, int32_t ignore_index,
                                   float* __restrict__ valid) {
  float c = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) c += labels[i] != ignore_index ? 1.0f : 0.0f;
  c = block_sum(c);
  if (threadIdx.x == 0) valid[0] = c;
}

__global__ void mean_loss_kernel(const float* __restrict__ token_loss, int64_t n, const float* __restrict__ valid,
                                 float* __restrict__ loss) {
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += token_loss[i];
  s = block_sum(s);
  if (threadIdx.x == 0) loss[0] = s / fmaxf(valid[0], 1.0f);
}

}  // namespace

void count_valid_labels_cuda(Context& ctx, const Tensor& labels, int32_t ignore_index, Tensor& valid) {
  ONN_CHECK_ARG(valid.dtype() == DType::f32, "count_valid_labels on CUDA writes F32");
  count_valid_kernel<<<1, 1024, 0, stream_of(ctx)>>>(ptr<const int32_t>(labels), labels.dim(0), ignore_index,
                                                     ptr<float>(valid));
  ONN_CUDA_CHECK_LAUNCH();
}

void cross_entropy_cuda(Context& ctx, Tensor& logits, const Tensor& labels, const Tensor& valid, Tensor& token_loss,
                        const CrossEntropyOptions& opt) {
  const int64_t n = logits.dim(0), v = logits.dim(1);
  if (n == 0) return;
  dispatch_float(logits.dtype(), "cross_entropy_forward_backward", [&](auto t) {
    using T = decltype(t);
    const bool vec = v % 8 == 0 && aligned16(logits.data());
    const auto kernel = vec ? cross_entropy_kernel<T, true> : cross_entropy_kernel<T, false>;
    kernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream_of(ctx)>>>(
        ptr<T>(logits), ptr<const int32_t>(labels), ptr<const float>(valid), ptr<float>(token_loss), v,
        opt.ignore_index, opt.compute_grad);
    ONN_CUDA_CHECK_LAUNCH();
  });
}

void vocab_chunk_stats_cuda(Context& ctx, const Tensor& logits, const Tensor& labels, int64_t v0, Tensor& m,
                            Tensor& l, Tensor& target, int32_t ignore_index) {
  const int64_t n = logits.dim(0);
  if (n == 0) return;
  dispatch_float(logits.dtype(), "vocab_chunk_stats", [&](auto t) {
    using T = decltype(t);
    vocab_stats_kernel<T><<<static_cast<unsigned>(n), kRowThreads, 0, stream_of(ctx)>>>(
        ptr<const T>(logits), ptr<const int32_t>(labels), logits.dim(1), v0, ptr<float>(m), ptr<float>(l),
        ptr<float>(target), ignore_index);
    ONN_CUDA_CHECK_LAUNCH();
  });
}

void vocab_chunk_grad_cuda(Context& ctx, Tensor& logits, const Tensor& labels, int64_t v0, const Tensor& m,
                           const Tensor& l, const Tensor& valid, int32_t ignore_index) {
  const int64_t n = logits.dim(0);
  if (n == 0) return;
  dispatch_float(logits.dtype(), "vocab_chunk_grad", [&](auto t) {
    using T = decltype(t);
    vocab_grad_kernel<T><<<static_cast<unsigned>(n), kRowThreads, 0, stream_of(ctx)>>>(
        ptr<T>(logits), ptr<const int32_t>(labels), logits.dim(1), v0, ptr<const float>(m), ptr<const float>(l),
        ptr<const float>(valid), ignore_index);
    ONN_CUDA_CHECK_LAUNCH();
  });
}

void vocab_chunk_loss_cuda(Context& ctx, const Tensor& labels, const Tensor& m, const Tensor& l,
                           const Tensor& target, Tensor& token_loss, int32_t ignore_index) {
  const int64_t n = labels.dim(0);
  if (n == 0) return;
  vocab_loss_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream_of(ctx)>>>(
      ptr<const int32_t>(labels), n, ptr<const float>(m), ptr<const float>(l), ptr<const float>(target),
      ptr<float>(token_loss), ignore_index);
  ONN_CUDA_CHECK_LAUNCH();
}

void mean_loss_cuda(Context& ctx, const Tensor& token_loss, const Tensor& valid, Tensor& loss) {
  ONN_CHECK_ARG(loss.dtype() == DType::f32, "mean_loss on CUDA takes F32");
  mean_loss_kernel<<<1, 1024, 0, stream_of(ctx)>>>(ptr<const float>(token_loss), token_loss.dim(0),
                                                   ptr<const float>(valid), ptr<float>(loss));
  ONN_CUDA_CHECK_LAUNCH();
}

}  // namespace onn
