// GEMM, the first op: c = alpha * op(a) @ op(b) + beta * c (+ bias), row-major, fp32
// accumulation. CPU: OpenBLAS sgemm (f32). CUDA: cuBLASLt (f32 or bf16 inputs; bf16 inputs
// may write f32 or bf16 c), strided batches, bias as a cuBLASLt epilogue.
#pragma once

#include <string>

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

// The arithmetic of the CPU backend's F32 products, process-wide. f32 (the default, and the
// reference): OpenBLAS sgemm. bf16: a and b rounded to bf16, products accumulated in f32 into an
// f32 c, as transformers' bf16 autocast multiplies (its result is bf16), through oneDNN (AMX or
// AVX-512 BF16): for products of several rows and at least 2M multiply-adds; single rows
// (decode) and small products stay f32. Results still do not depend on the thread count.
enum class CpuMatmul { f32, bf16 };
const char* cpu_matmul_name(CpuMatmul p);
// InvalidArgument naming --cpu-matmul when bf16 is asked for and missing.
void set_cpu_matmul(CpuMatmul p);
CpuMatmul cpu_matmul();
// Why the bf16 GEMM is not available here ("" when it is).
std::string cpu_bf16_matmul_missing();
// Whether a product of an F32 x with a BF16 w reads w as stored: on the CPU with
// CpuMatmul::bf16 (bf16-stored weights, --quantize bf16, are then never widened). matmul takes
// such a b (an F32 a and c); below the bf16 path's size b is widened exactly and sgemm runs.
bool cpu_bf16_weights(Device device, DType x, DType w);

// a: (M, K) or (batch, M, K); b: (K, N) or (batch, K, N); c: (M, N) or (batch, M, N).
// Throws InvalidArgument naming the op and the shapes on any mismatch of shape, dtype or
// device.
void matmul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt = {});
// Allocates c with dtype `out` (default: a's dtype) on a's device.
Tensor matmul(Context& ctx, const Tensor& a, const Tensor& b, const MatmulOptions& opt = {},
              std::optional<DType> out = std::nullopt);

}  // namespace onn
