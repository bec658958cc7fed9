// matmul on the CPU: OpenBLAS sgemm per batch entry (row-major), bias added after.
#include <cblas.h>

#include "kernels/matmul.h"
#include "runtime/error.h"

namespace onn {

void matmul_cpu(const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt) {
  ONN_CHECK_ARG(a.dtype() == DType::f32 && c.dtype() == DType::f32, "matmul on the CPU takes F32 tensors, got a ",
                dtype_name(a.dtype()), " and c ", dtype_name(c.dtype()));
  if (s.m == 0 || s.n == 0) return;
  const float* pa = a.numel() ? a.data_as<float>() : nullptr;
  const float* pb = b.numel() ? b.data_as<float>() : nullptr;
  float* pc = c.data_as<float>();
  const int m = static_cast<int>(s.m), n = static_cast<int>(s.n), k = static_cast<int>(s.k);
  ONN_CHECK_ARG(s.m <= INT32_MAX && s.n <= INT32_MAX && s.k <= INT32_MAX, "matmul: dims exceed the BLAS int range");
  const int lda = opt.trans_a ? m : k;
  const int ldb = opt.trans_b ? k : n;
  for (int64_t i = 0; i < s.batch; ++i) {
    float* ci = pc + i * s.stride_c;
    if (s.k == 0) {
      // sgemm with k == 0 still scales c by beta; do it explicitly for clarity.
      for (int64_t e = 0; e < s.m * s.n; ++e) ci[e] = opt.beta == 0.0f ? 0.0f : opt.beta * ci[e];
    } else {
      cblas_sgemm(CblasRowMajor, opt.trans_a ? CblasTrans : CblasNoTrans, opt.trans_b ? CblasTrans : CblasNoTrans, m,
                  n, k, opt.alpha, pa + i * s.stride_a, lda, pb + i * s.stride_b, ldb, opt.beta, ci, n);
    }
    if (opt.bias != nullptr) {
      const float* bias = opt.bias->data_as<float>();
      for (int64_t r = 0; r < s.m; ++r) {
        for (int64_t j = 0; j < s.n; ++j) ci[r * s.n + j] += bias[j];
      }
    }
  }
}

}  // namespace onn
