// SwiGLU on CUDA: a grid-stride loop over groups of eight columns of a row, with 16-byte
// vectors when F % 8 == 0 and the pointers allow (both layouts keep row starts aligned then).
#include "kernels/backends.h"
#include "kernels/cuda/common.cuh"
#include "kernels/swiglu.h"

namespace onn {

using namespace cuda_kernels;

namespace {

template <typename T, bool kVec, bool kBackward>
__global__ void swiglu_kernel(SwigluArgs a) {
  const int64_t groups_per_row = (a.f + 7) / 8, total = a.n * groups_per_row;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / groups_per_row, j0 = (idx % groups_per_row) * 8;
    const T* g = static_cast<const T*>(a.gate) + i * a.ld_in + j0;
    const T* u = static_cast<const T*>(a.up) + i * a.ld_in + j0;
    float gv[8], uv[8], dv[8], o1[8], o2[8];
    const int cnt = static_cast<int>(a.f - j0 < 8 ? a.f - j0 : 8);
    if (kVec) {
      load8(g, gv);
      load8(u, uv);
      if (kBackward) load8(static_cast<const T*>(a.dout) + i * a.f + j0, dv);
    } else {
      for (int k = 0; k < 8; ++k) {
        gv[k] = k < cnt ? to_f(g[k]) : 0.0f;
        uv[k] = k < cnt ? to_f(u[k]) : 0.0f;
        dv[k] = (kBackward && k < cnt) ? to_f(static_cast<const T*>(a.dout)[i * a.f + j0 + k]) : 0.0f;
      }
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float s = 1.0f / (1.0f + expf(-gv[k]));
      if (kBackward) {
        o1[k] = dv[k] * uv[k] * s * (1.0f + gv[k] * (1.0f - s));
        o2[k] = dv[k] * gv[k] * s;
      } else {
        o1[k] = gv[k] * s * uv[k];
      }
    }
    T* p1 = kBackward ? static_cast<T*>(a.dgate) + i * a.ld_din + j0 : static_cast<T*>(a.out) + i * a.f + j0;
    T* p2 = kBackward ? static_cast<T*>(a.dup) + i * a.ld_din + j0 : nullptr;
    if (kVec) {
      store8(p1, o1);
      if (kBackward) store8(p2, o2);
    } else {
      for (int k = 0; k < cnt; ++k) {
        p1[k] = from_f<T>(o1[k]);
        if (kBackward) p2[k] = from_f<T>(o2[k]);
      }
    }
  }
}

}  // namespace

void swiglu_cuda(Context& ctx, const SwigluArgs& a, bool backward) {
  if (a.n == 0 || a.f == 0) return;
  const int64_t total = a.n * ((a.f + 7) / 8);
  dispatch_float(a.dtype, "swiglu", [&](auto t) {
    using T = decltype(t);
    const bool vec = a.f % 8 == 0 && a.ld_in % 8 == 0 && aligned16(a.gate, a.up) &&
                     (backward ? a.ld_din % 8 == 0 && aligned16(a.dout, a.dgate, a.dup) : aligned16(a.out));
    const unsigned grid = grid_for(total);
    const auto kernel = backward ? (vec ? swiglu_kernel<T, true, true> : swiglu_kernel<T, false, true>)
                                 : (vec ? swiglu_kernel<T, true, false> : swiglu_kernel<T, false, false>);
    kernel<<<grid, kThreads, 0, stream_of(ctx)>>>(a);
    ONN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace onn
