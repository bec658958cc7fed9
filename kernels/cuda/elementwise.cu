// Elementwise ops on CUDA: grid-stride loops over groups of eight elements, with 16-byte
// vector loads and stores when every pointer allows them (the scalar path handles views
// at odd offsets and the tail).
#include "kernels/backends.h"
#include "kernels/counter_rng.h"
#include "kernels/cuda/common.cuh"
#include "kernels/elementwise.h"

namespace onn {

using namespace cuda_kernels;

namespace {

// f(i, v[8]) transforms the eight values of the group starting at element i in place.
template <bool kVec, typename TI, typename TO, typename F>
__global__ void map_kernel(const TI* in, TO* out, int64_t n, F f) {
  const int64_t groups = (n + 7) / 8;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = g * 8;
    float v[8];
    if (kVec && i0 + 8 <= n) {
      load8(in + i0, v);
      f(i0, v);
      store8(out + i0, v);
    } else {
      const int cnt = static_cast<int>(n - i0 < 8 ? n - i0 : 8);
      for (int j = 0; j < cnt; ++j) v[j] = to_f(in[i0 + j]);
      for (int j = cnt; j < 8; ++j) v[j] = 0.0f;
      f(i0, v);
      for (int j = 0; j < cnt; ++j) out[i0 + j] = from_f<TO>(v[j]);
    }
  }
}

template <typename TI, typename TO, typename F>
void launch_map(Context& ctx, const TI* in, TO* out, int64_t n, F f) {
  if (n == 0) return;
  const unsigned grid = grid_for((n + 7) / 8);
  if (aligned16(in, out))
    map_kernel<true><<<grid, kThreads, 0, stream_of(ctx)>>>(in, out, n, f);
  else
    map_kernel<false><<<grid, kThreads, 0, stream_of(ctx)>>>(in, out, n, f);
  ONN_CUDA_CHECK_LAUNCH();
}

template <bool kVec, typename T>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  // b and out may alias a (in-place residual add): each element is read before written.
  const int64_t groups = (n + 7) / 8;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = g * 8;
    if (kVec && i0 + 8 <= n) {
      float va[8], vb[8];
      load8(a + i0, va);
      load8(b + i0, vb);
#pragma unroll
      for (int j = 0; j < 8; ++j) va[j] += vb[j];
      store8(out + i0, va);
    } else {
      for (int64_t i = i0; i < n && i < i0 + 8; ++i) out[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
    }
  }
}

struct Identity {
  __device__ void operator()(int64_t, float (&)[8]) const {}
};
struct Scale {
  float s;
  __device__ void operator()(int64_t, float (&v)[8]) const {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] *= s;
  }
};
struct Fill {
  float value;
  __device__ void operator()(int64_t, float (&v)[8]) const {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = value;
  }
};
struct Dropout {
  float p, keep_scale;
  uint64_t seed;
  __device__ void operator()(int64_t i0, float (&v)[8]) const {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      v[j] = counter_uniform(seed, static_cast<uint64_t>(i0 + j)) >= p ? v[j] * keep_scale : 0.0f;
  }
};

}  // namespace

void cast_cuda(Context& ctx, const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  dispatch_float(src.dtype(), "cast", [&](auto ti) {
    using TI = decltype(ti);
    dispatch_float(dst.dtype(), "cast", [&](auto to) {
      using TO = decltype(to);
      launch_map(ctx, ptr<const TI>(src), ptr<TO>(dst), n, Identity{});
    });
  });
}

void add_cuda(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = a.numel();
  if (n == 0) return;
  dispatch_float(a.dtype(), "add", [&](auto t) {
    using T = decltype(t);
    const unsigned grid = grid_for((n + 7) / 8);
    if (aligned16(a.data(), b.data(), out.data()))
      add_kernel<true, T><<<grid, kThreads, 0, stream_of(ctx)>>>(ptr<const T>(a), ptr<const T>(b), ptr<T>(out), n);
    else
      add_kernel<false, T><<<grid, kThreads, 0, stream_of(ctx)>>>(ptr<const T>(a), ptr<const T>(b), ptr<T>(out), n);
    ONN_CUDA_CHECK_LAUNCH();
  });
}

void scale_cuda(Context& ctx, Tensor& x, float s) {
  dispatch_float(x.dtype(), "scale", [&](auto t) {
    using T = decltype(t);
    launch_map(ctx, ptr<const T>(x), ptr<T>(x), x.numel(), Scale{s});
  });
}

void fill_cuda(Context& ctx, Tensor& x, float value) {
  dispatch_float(x.dtype(), "fill", [&](auto t) {
    using T = decltype(t);
    launch_map(ctx, ptr<const T>(x), ptr<T>(x), x.numel(), Fill{value});
  });
}

void dropout_cuda(Context& ctx, const Tensor& x, float p, uint64_t seed, Tensor& out) {
  const float keep_scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
  dispatch_float(x.dtype(), "dropout", [&](auto t) {
    using T = decltype(t);
    launch_map(ctx, ptr<const T>(x), ptr<T>(out), x.numel(), Dropout{p, keep_scale, seed});
  });
}

}  // namespace onn
