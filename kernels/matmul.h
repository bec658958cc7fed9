// GEMM, the first op: c = alpha * op(a) @ op(b) + beta * c (+ bias), row-major, fp32
// accumulation. CPU: OpenBLAS sgemm (f32). CUDA: cuBLASLt (f32 or bf16 inputs; bf16 inputs
// may write f32 or bf16 c), strided batches, bias as a cuBLASLt epilogue.
#pragma once

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

struct MatmulOptions {
  bool trans_a = false;  // a stored as (K, M) / (batch, K, M)
  bool trans_b = false;  // b stored as (N, K) / (batch, N, K): y = x W^T is trans_b
  float alpha = 1.0f;
  float beta = 0.0f;            // c is read only when beta != 0
  const Tensor* bias = nullptr;  // (N,), dtype of c, added to every row
};

// Sizes and element strides of a validated matmul; a stride of 0 broadcasts a rank-2
// operand over the batch.
struct MatmulShape {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

// a: (M, K) or (batch, M, K); b: (K, N) or (batch, K, N); c: (M, N) or (batch, M, N).
// Throws InvalidArgument naming the op and the shapes on any mismatch of shape, dtype or
// device.
void matmul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt = {});
// Allocates c with dtype `out` (default: a's dtype) on a's device.
Tensor matmul(Context& ctx, const Tensor& a, const Tensor& b, const MatmulOptions& opt = {},
              std::optional<DType> out = std::nullopt);

}  // namespace onn
