// matmul on CUDA through cuBLASLt. cuBLASLt is column-major, so the row-major product
// C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T: the operands swap places and each
// row-major buffer is read as its column-major transpose, with no data movement.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>

#include "kernels/matmul.h"
#include "runtime/cuda_check.h"
#include "runtime/error.h"

namespace onn {

namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: throw InvalidArgument(std::string("matmul on CUDA does not take ") + std::string(dtype_name(t)));
  }
}

// Largest power of two (up to 256) dividing the address: cuBLASLt picks kernels by it.
uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

template <typename T, void (*Destroy)(T)>
struct Handle {
  T h = nullptr;
  ~Handle() {
    if (h) Destroy(h);
  }
};
void destroy_desc(cublasLtMatmulDesc_t d) { cublasLtMatmulDescDestroy(d); }
void destroy_layout(cublasLtMatrixLayout_t l) { cublasLtMatrixLayoutDestroy(l); }
void destroy_pref(cublasLtMatmulPreference_t p) { cublasLtMatmulPreferenceDestroy(p); }

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  ONN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    ONN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
    ONN_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
  return l;
}

}  // namespace

void matmul_cuda(Context& ctx, const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c,
                 const MatmulOptions& opt) {
  const bool f32 = a.dtype() == DType::f32;
  ONN_CHECK_ARG(a.dtype() == DType::f32 || a.dtype() == DType::bf16, "matmul on CUDA takes F32 or BF16 inputs, got ",
                dtype_name(a.dtype()));
  ONN_CHECK_ARG(f32 ? c.dtype() == DType::f32 : (c.dtype() == DType::bf16 || c.dtype() == DType::f32),
                "matmul on CUDA: ", dtype_name(a.dtype()), " inputs cannot write a ", dtype_name(c.dtype()), " output");
  if (s.m == 0 || s.n == 0 || s.batch == 0) return;
  if (s.k == 0) {
    // cuBLASLt rejects k == 0; the product is empty, so c = beta * c (+ bias) remains. Only
    // the common beta == 0, no-bias case is needed so far.
    ONN_CHECK_ARG(opt.beta == 0.0f && opt.bias == nullptr, "matmul on CUDA with K = 0 needs beta = 0 and no bias");
    c.fill_bytes(0, &ctx.compute());
    return;
  }
  const cudaDataType_t in_t = cuda_type(a.dtype());
  const cudaDataType_t out_t = cuda_type(c.dtype());

  Handle<cublasLtMatmulDesc_t, destroy_desc> desc;
  // fp32 inputs use true fp32 math (no TF32) so parity with the CPU reference stays tight.
  ONN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.h, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major roles: A' = b, B' = a.
  const cublasOperation_t op_a = opt.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = opt.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  ONN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  ONN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  if (opt.bias != nullptr) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const void* bias = opt.bias->data();
    ONN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    ONN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    ONN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &out_t, sizeof out_t));
  }

  // b as column-major: (N x K) with ld N, or transposed storage (K x N) with ld K.
  Handle<cublasLtMatrixLayout_t, destroy_layout> la, lb, lc;
  la.h = opt.trans_b ? make_layout(in_t, s.k, s.n, s.k, s.batch, s.stride_b)
                     : make_layout(in_t, s.n, s.k, s.n, s.batch, s.stride_b);
  lb.h = opt.trans_a ? make_layout(in_t, s.m, s.k, s.m, s.batch, s.stride_a)
                     : make_layout(in_t, s.k, s.m, s.k, s.batch, s.stride_a);
  lc.h = make_layout(out_t, s.n, s.m, s.n, s.batch, s.stride_c);

  Handle<cublasLtMatmulPreference_t, destroy_pref> pref;
  ONN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.h));
  const size_t ws = ctx.workspace_bytes();
  ONN_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  const uint32_t al_a = alignment_of(b.data()), al_b = alignment_of(a.data()), al_c = alignment_of(c.data());
  ONN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                        sizeof al_a));
  ONN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                        sizeof al_b));
  ONN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                                                        sizeof al_c));
  ONN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                                                        sizeof al_c));
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  ONN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.cublaslt(), desc.h, la.h, lb.h, lc.h, lc.h, pref.h, 1, &heur,
                                                  &found));
  ONN_CHECK_ARG(found > 0, "matmul on CUDA: cuBLASLt has no algorithm for M=", s.m, " N=", s.n, " K=", s.k,
                " batch=", s.batch, " ", dtype_name(a.dtype()), "->", dtype_name(c.dtype()));
  ONN_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt(), desc.h, &opt.alpha, b.data(), la.h, a.data(), lb.h, &opt.beta,
                                  c.data(), lc.h, c.data(), lc.h, &heur.algo, ctx.workspace(), ws,
                                  ctx.compute().cuda_stream()));
}

}  // namespace onn
