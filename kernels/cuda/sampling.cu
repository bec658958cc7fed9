// argmax over rows on CUDA: one block per row; each thread scans a strided slice, then the
// block reduces (value, index) pairs, preferring the lower index on ties, as the CPU does.
#include "kernels/backends.h"
#include "kernels/cuda/common.cuh"
#include "kernels/sampling.h"

namespace onn {

using namespace cuda_kernels;

namespace {

__device__ __forceinline__ bool better(float v, int64_t i, float bv, int64_t bi) {
  if (isnan(v) || i < 0) return false;
  if (bi < 0) return true;
  return v > bv || (v == bv && i < bi);
}

template <typename T>
__global__ void argmax_kernel(const T* __restrict__ logits, int64_t v, int32_t* __restrict__ out) {
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  const T* row = logits + blockIdx.x * v;
  float bv = 0.0f;
  int64_t bi = -1;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float x = to_f(row[j]);
    if (better(x, j, bv, bi)) {
      bv = x;
      bi = j;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w)
      if (better(sv[w], si[w], bv, bi)) {
        bv = sv[w];
        bi = si[w];
      }
    out[blockIdx.x] = static_cast<int32_t>(bi);
  }
}

}  // namespace

void argmax_rows_cuda(Context& ctx, const Tensor& logits, Tensor& out) {
  const int64_t n = logits.dim(0);
  if (n == 0) return;
  dispatch_float(logits.dtype(), "argmax_rows", [&](auto t) {
    using T = decltype(t);
    argmax_kernel<T><<<static_cast<unsigned>(n), 1024, 0, stream_of(ctx)>>>(ptr<const T>(logits), logits.dim(1),
                                                                            ptr<int32_t>(out));
    ONN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace onn
