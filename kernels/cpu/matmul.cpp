// matmul on the CPU: OpenBLAS sgemm (F32) or dgemm (F64, for finite-difference tests of the
// ops built on matmul) per batch entry, row-major, bias added after.
#include <cblas.h>

#include <type_traits>

#include "kernels/backends.h"
#include "kernels/matmul.h"
#include "runtime/error.h"

namespace onn {

namespace {

template <typename T>
void gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
          int ldc) {
  const auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename T>
void run(const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt) {
  const T* pa = a.numel() ? static_cast<const T*>(a.data()) : nullptr;
  const T* pb = b.numel() ? static_cast<const T*>(b.data()) : nullptr;
  T* pc = static_cast<T*>(c.data());
  const int m = static_cast<int>(s.m), n = static_cast<int>(s.n), k = static_cast<int>(s.k);
  const int lda = opt.trans_a ? m : k;
  const int ldb = opt.trans_b ? k : n;
  for (int64_t i = 0; i < s.batch; ++i) {
    T* ci = pc + i * s.stride_c;
    if (s.k == 0) {
      // gemm with k == 0 still scales c by beta; do it explicitly for clarity.
      for (int64_t e = 0; e < s.m * s.n; ++e) ci[e] = opt.beta == 0.0f ? T(0) : static_cast<T>(opt.beta) * ci[e];
    } else {
      gemm<T>(opt.trans_a, opt.trans_b, m, n, k, static_cast<T>(opt.alpha), pa + i * s.stride_a, lda,
              pb + i * s.stride_b, ldb, static_cast<T>(opt.beta), ci, n);
    }
    if (opt.bias != nullptr) {
      const T* bias = static_cast<const T*>(opt.bias->data());
      for (int64_t r = 0; r < s.m; ++r) {
        for (int64_t j = 0; j < s.n; ++j) ci[r * s.n + j] += bias[j];
      }
    }
  }
}

}  // namespace

void matmul_cpu(const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt) {
  const bool f32 = a.dtype() == DType::f32 && c.dtype() == DType::f32;
  const bool f64 = a.dtype() == DType::f64 && c.dtype() == DType::f64;
  ONN_CHECK_ARG(f32 || f64, "matmul on the CPU takes F32 or F64 tensors (one dtype), got a ", dtype_name(a.dtype()),
                " and c ", dtype_name(c.dtype()));
  ONN_CHECK_ARG(s.m <= INT32_MAX && s.n <= INT32_MAX && s.k <= INT32_MAX, "matmul: dims exceed the BLAS int range");
  if (s.m == 0 || s.n == 0) return;
  if (f32)
    run<float>(s, a, b, c, opt);
  else
    run<double>(s, a, b, c, opt);
}

}  // namespace onn
