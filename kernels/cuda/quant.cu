// Dequantization on CUDA: one thread per output element over a grid-stride loop, the same
// per-element arithmetic as the CPU (kernels/quant_math.h), rounded once to the output dtype.
// A memory-bound pass; the linear layers call it into a scratch weight just before the GEMM.
#include "kernels/backends.h"
#include "kernels/cuda/common.cuh"
#include "kernels/quant_math.h"

namespace onn {

using namespace cuda_kernels;

namespace {

struct Nf4Args {
  const uint8_t* packed;
  const float* code;
  const float* absmax;
  const uint8_t* qabsmax;
  const float* nested_code;
  const float* nested_absmax;
  float offset;
  int64_t e0, n;
};

template <typename T>
__global__ void nf4_kernel(Nf4Args a, T* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = a.e0 + i;
    const float am = quant_math::nf4_block_absmax(a.absmax, a.qabsmax, a.nested_code, a.nested_absmax, a.offset,
                                                  e / kNf4Block, kNf4NestedBlock);
    out[i] = from_f<T>(quant_math::nf4_element(a.packed, a.code, e, am));
  }
}

template <typename T, bool kInt8>
__global__ void rows_kernel(const void* data, const float* absmax, int64_t row0, int64_t rows, int64_t cols,
                            float fmax, T* out) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = row0 + i / cols, e = row0 * cols + i;
    const float scale = quant_math::row_scale(absmax[row], fmax);
    const float v = kInt8 ? static_cast<float>(static_cast<const int8_t*>(data)[e])
                          : quant_math::fp8_e4m3_value(static_cast<const uint8_t*>(data)[e]);
    out[i] = from_f<T>(v * scale);
  }
}

template <typename T>
void launch(Context& ctx, const QuantTensor& q, T* out) {
  const int64_t n = q.rows * q.cols;
  if (n == 0) return;
  const unsigned grid = grid_for(n);
  if (q.format == QuantFormat::nf4) {
    const bool dq = q.double_quant();
    Nf4Args a{static_cast<const uint8_t*>(q.data.data()),
              static_cast<const float*>(q.code.data()),
              dq ? nullptr : static_cast<const float*>(q.absmax.data()),
              dq ? static_cast<const uint8_t*>(q.absmax.data()) : nullptr,
              dq ? static_cast<const float*>(q.nested_code.data()) : nullptr,
              dq ? static_cast<const float*>(q.nested_absmax.data()) : nullptr,
              q.nested_offset,
              q.row0 * q.cols,
              n};
    nf4_kernel<T><<<grid, kThreads, 0, stream_of(ctx)>>>(a, out);
  } else if (q.format == QuantFormat::int8) {
    rows_kernel<T, true><<<grid, kThreads, 0, stream_of(ctx)>>>(
        q.data.data(), static_cast<const float*>(q.absmax.data()), q.row0, q.rows, q.cols, kInt8Max, out);
  } else {
    rows_kernel<T, false><<<grid, kThreads, 0, stream_of(ctx)>>>(
        q.data.data(), static_cast<const float*>(q.absmax.data()), q.row0, q.rows, q.cols, kFp8E4M3Max, out);
  }
  ONN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void dequantize_cuda(Context& ctx, const QuantTensor& q, Tensor& out) {
  if (out.dtype() == DType::bf16)
    launch(ctx, q, static_cast<bf16*>(out.data()));
  else
    launch(ctx, q, static_cast<float*>(out.data()));
}

}  // namespace onn
