// RMSNorm on CUDA. Forward: one block per row, two passes over the row (sum of squares, then
// the scaled output; the second read hits L1/L2), 16-byte vectors when C % 8 == 0 and the
// pointers allow. Backward: a fixed grid strides over rows; dweight is summed per block into
// a (G, C) scratch and then down the blocks in order, so it is bitwise reproducible.
#include "kernels/backends.h"
#include "kernels/cuda/common.cuh"
#include "kernels/rmsnorm.h"

namespace onn {

using namespace cuda_kernels;

namespace {

constexpr int kNormThreads = 256;
constexpr int kBackwardBlocks = 512;

// kAdd: sum = x + add (sum may be x), then the norm of sum.
template <typename T, bool kAdd, bool kVec>
__global__ void rmsnorm_forward_kernel(const T* x, const T* add, T* sum, const T* __restrict__ w, T* __restrict__ y,
                                       float* __restrict__ rstd, int64_t c, float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = (kAdd ? sum : x) + row * c;  // the normalised row: read after this thread wrote it
  const T* in = x + row * c;
  T* yr = y + row * c;
  float ss = 0.0f;
  if (kVec) {
    for (int64_t j = threadIdx.x * 8; j < c; j += blockDim.x * 8) {
      float v[8];
      load8(in + j, v);
      if (kAdd) {
        float a[8];
        load8(add + row * c + j, a);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = to_f(from_f<T>(v[k] + a[k]));  // as stored
        store8(sum + row * c + j, v);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) ss += v[k] * v[k];
    }
  } else {
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
      float v = to_f(in[j]);
      if (kAdd) {
        const T s = from_f<T>(v + to_f(add[row * c + j]));
        sum[row * c + j] = s;
        v = to_f(s);
      }
      ss += v * v;
    }
  }
  ss = block_sum(ss);
  const float r = rsqrtf(ss / static_cast<float>(c) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  // Hugging Face rounds x * rstd to the data dtype before the weight multiplies it.
  if (kVec) {
    for (int64_t j = threadIdx.x * 8; j < c; j += blockDim.x * 8) {
      float v[8], wv[8];
      load8(xr + j, v);
      load8(w + j, wv);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = wv[k] * to_f(from_f<T>(v[k] * r));
      store8(yr + j, v);
    }
  } else {
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x)
      yr[j] = from_f<T>(to_f(w[j]) * to_f(from_f<T>(to_f(xr[j]) * r)));
  }
}

// partial (gridDim.x, C): this block's dweight sums; each element has one owner thread.
template <typename T, bool kVec>
__global__ void rmsnorm_backward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                        const float* __restrict__ rstd, const T* __restrict__ dy, T* dx,
                                        float* __restrict__ partial, int64_t n, int64_t c, bool accumulate) {
  float* pw = partial ? partial + blockIdx.x * c : nullptr;
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const T* xr = x + row * c;
    const T* gr = dy + row * c;
    T* dr = dx + row * c;
    const float r = rstd[row];
    float dot = 0.0f;
    if (kVec) {
      for (int64_t j = threadIdx.x * 8; j < c; j += blockDim.x * 8) {
        float xv[8], gv[8], wv[8];
        load8(xr + j, xv);
        load8(gr + j, gv);
        load8(w + j, wv);
#pragma unroll
        for (int k = 0; k < 8; ++k) dot += wv[k] * gv[k] * xv[k];
      }
    } else {
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dot += to_f(w[j]) * to_f(gr[j]) * to_f(xr[j]);
    }
    dot = block_sum(dot);
    const float k3 = r * r * r * dot / static_cast<float>(c);
    if (kVec) {
      for (int64_t j = threadIdx.x * 8; j < c; j += blockDim.x * 8) {
        float xv[8], gv[8], wv[8], out[8];
        load8(xr + j, xv);
        load8(gr + j, gv);
        load8(w + j, wv);
        if (accumulate) {
          load8(dr + j, out);
        } else {
#pragma unroll
          for (int k = 0; k < 8; ++k) out[k] = 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          out[k] += r * wv[k] * gv[k] - k3 * xv[k];
          if (pw) pw[j + k] += gv[k] * xv[k] * r;
        }
        store8(dr + j, out);
      }
    } else {
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
        const float xv = to_f(xr[j]), gv = to_f(gr[j]);
        const float v = r * to_f(w[j]) * gv - k3 * xv;
        dr[j] = from_f<T>(accumulate ? to_f(dr[j]) + v : v);
        if (pw) pw[j] += gv * xv * r;
      }
    }
  }
}

// out[j] = sum over rows i of partial[i][j], in row order.
__global__ void column_sum_kernel(const float* __restrict__ partial, float* __restrict__ out, int64_t rows,
                                  int64_t c) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < c;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int64_t i = 0; i < rows; ++i) s += partial[i * c + j];
    out[j] = s;
  }
}

}  // namespace

void rmsnorm_forward_cuda(Context& ctx, const Tensor& x, const Tensor* add_t, Tensor* sum_t, const Tensor& weight,
                          float eps, Tensor& y, Tensor& rstd) {
  const int64_t n = x.dim(0), c = x.dim(1);
  if (n == 0) return;
  dispatch_float(x.dtype(), "rmsnorm_forward", [&](auto t) {
    using T = decltype(t);
    const T* add = add_t ? ptr<const T>(*add_t) : nullptr;
    T* sum = add_t ? ptr<T>(*sum_t) : nullptr;
    const bool vec = c % 8 == 0 && aligned16(x.data(), weight.data(), y.data()) && (!add || aligned16(add, sum));
    const auto args = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(n), kNormThreads, 0, stream_of(ctx)>>>(
          ptr<const T>(x), add, sum, ptr<const T>(weight), ptr<T>(y), ptr<float>(rstd), c, eps);
    };
    if (add) {
      vec ? args(rmsnorm_forward_kernel<T, true, true>) : args(rmsnorm_forward_kernel<T, true, false>);
    } else {
      vec ? args(rmsnorm_forward_kernel<T, false, true>) : args(rmsnorm_forward_kernel<T, false, false>);
    }
    ONN_CUDA_CHECK_LAUNCH();
  });
}

void rmsnorm_backward_cuda(Context& ctx, const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dy,
                           Tensor& dx, Tensor* dweight, bool accumulate_dx) {
  const int64_t n = x.dim(0), c = x.dim(1);
  const int64_t grid = n < kBackwardBlocks ? (n > 0 ? n : 1) : kBackwardBlocks;
  Tensor partial;
  if (dweight != nullptr) {
    partial = Tensor::empty(Shape{grid, c}, DType::f32, ctx.allocator());
    partial.fill_bytes(0, &ctx.compute());
  }
  float* pp = dweight ? ptr<float>(partial) : nullptr;
  dispatch_float(x.dtype(), "rmsnorm_backward", [&](auto t) {
    using T = decltype(t);
    if (n > 0) {
      const bool vec = c % 8 == 0 && aligned16(x.data(), weight.data(), dy.data(), dx.data());
      const auto kernel = vec ? rmsnorm_backward_kernel<T, true> : rmsnorm_backward_kernel<T, false>;
      kernel<<<static_cast<unsigned>(grid), kNormThreads, 0, stream_of(ctx)>>>(
          ptr<const T>(x), ptr<const T>(weight), ptr<const float>(rstd), ptr<const T>(dy), ptr<T>(dx), pp, n, c,
          accumulate_dx);
      ONN_CUDA_CHECK_LAUNCH();
    }
  });
  if (dweight != nullptr) {
    column_sum_kernel<<<grid_for(c), kThreads, 0, stream_of(ctx)>>>(pp, ptr<float>(*dweight), grid, c);
    ONN_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace onn
