// The CPU's bf16 GEMM, when the build has oneDNN (ONN_HAVE_ONEDNN): c = alpha * op(a) op(b) +
// beta * c over bf16 a and b (raw bits), f32 accumulation and c, row-major with leading dims.
#pragma once

#include <cstdint>
#include <string>

namespace onn {

struct Bf16Gemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
};

// oneDNN's implementation of the bf16 matmul on this CPU (e.g. "brg:avx512_core_amx_bf16"),
// or "" when it has none.
std::string cpu_bf16_gemm_impl();
// One single-threaded call (k > 0).
void cpu_bf16_gemm(const Bf16Gemm& g, const uint16_t* a, const uint16_t* b, float* c);

}  // namespace onn
