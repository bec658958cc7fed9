// matmul on CUDA through cuBLASLt. cuBLASLt is column-major, so the row-major product
// C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T: the operands swap places and each
// row-major buffer is read as its column-major transpose, with no data movement.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "kernels/backends.h"
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

// Everything a cuBLASLt plan depends on. Descriptors, layouts and the heuristic's algorithm
// are built once per key (the heuristic query alone costs tens of microseconds, as much as a
// small LoRA GEMM) and reused; only the bias pointer is set per call.
struct PlanKey {
  const void* handle;
  int device;
  cudaDataType_t in_t, out_t;
  bool trans_a, trans_b, bias;
  int64_t m, n, k, batch, stride_a, stride_b, stride_c;
  uint32_t align_a, align_b, align_c;
  size_t workspace;
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = std::hash<const void*>()(k.handle) ^ static_cast<size_t>(k.device);
    const auto mix = [&h](uint64_t v) { h ^= std::hash<uint64_t>()(v) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2); };
    for (uint64_t v : {static_cast<uint64_t>(k.in_t), static_cast<uint64_t>(k.out_t),
                       static_cast<uint64_t>(k.trans_a) | (uint64_t{k.trans_b} << 1) | (uint64_t{k.bias} << 2),
                       static_cast<uint64_t>(k.m), static_cast<uint64_t>(k.n), static_cast<uint64_t>(k.k),
                       static_cast<uint64_t>(k.batch), static_cast<uint64_t>(k.stride_a),
                       static_cast<uint64_t>(k.stride_b), static_cast<uint64_t>(k.stride_c),
                       static_cast<uint64_t>(k.align_a) | (uint64_t{k.align_b} << 16) | (uint64_t{k.align_c} << 32),
                       static_cast<uint64_t>(k.workspace)})
      mix(v);
    return h;
  }
};

struct Plan {
  Handle<cublasLtMatmulDesc_t, destroy_desc> desc;
  Handle<cublasLtMatrixLayout_t, destroy_layout> la, lb, lc;
  cublasLtMatmulAlgo_t algo{};
};

struct PlanCache {
  static constexpr size_t kMaxPlans = 4096;  // a model uses a few dozen shapes; cleared if exceeded
  std::mutex mutex;
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;

  Plan& get(const PlanKey& key, const MatmulShape& s) {
    auto it = plans.find(key);
    if (it != plans.end()) return *it->second;
    if (plans.size() >= kMaxPlans) plans.clear();
    auto plan = std::make_unique<Plan>();
    // fp32 inputs use true fp32 math (no TF32) so parity with the CPU reference stays tight.
    ONN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc.h, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // Column-major roles: A' = b, B' = a.
    const cublasOperation_t op_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    ONN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc.h, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    ONN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc.h, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    if (key.bias) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      ONN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
      ONN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc.h, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &key.out_t,
                                                      sizeof key.out_t));
    }
    // b as column-major: (N x K) with ld N, or transposed storage (K x N) with ld K.
    plan->la.h = key.trans_b ? make_layout(key.in_t, s.k, s.n, s.k, s.batch, s.stride_b)
                             : make_layout(key.in_t, s.n, s.k, s.n, s.batch, s.stride_b);
    plan->lb.h = key.trans_a ? make_layout(key.in_t, s.m, s.k, s.m, s.batch, s.stride_a)
                             : make_layout(key.in_t, s.k, s.m, s.k, s.batch, s.stride_a);
    plan->lc.h = make_layout(key.out_t, s.n, s.m, s.n, s.batch, s.stride_c);
    Handle<cublasLtMatmulPreference_t, destroy_pref> pref;
    ONN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.h));
    const auto set_pref = [&](cublasLtMatmulPreferenceAttributes_t attr, const auto& value) {
      ONN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, attr, &value, sizeof value));
    };
    set_pref(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, key.workspace);
    set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a);
    set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b);
    set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c);
    set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c);
    cublasLtMatmulHeuristicResult_t heur{};
    int found = 0;
    ONN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(const_cast<void*>(key.handle)),
                                                    plan->desc.h, plan->la.h, plan->lb.h, plan->lc.h, plan->lc.h,
                                                    pref.h, 1, &heur, &found));
    ONN_CHECK_ARG(found > 0, "matmul on CUDA: cuBLASLt has no algorithm for M=", s.m, " N=", s.n, " K=", s.k,
                  " batch=", s.batch);
    plan->algo = heur.algo;
    return *plans.emplace(key, std::move(plan)).first->second;
  }
};

PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache;  // never destroyed: outlives every static Context
  return *cache;
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
  PlanKey key{};
  key.handle = ctx.cublaslt();
  key.device = ctx.device().index;
  key.in_t = in_t;
  key.out_t = out_t;
  key.trans_a = opt.trans_a;
  key.trans_b = opt.trans_b;
  key.bias = opt.bias != nullptr;
  key.m = s.m;
  key.n = s.n;
  key.k = s.k;
  key.batch = s.batch;
  key.stride_a = s.stride_a;
  key.stride_b = s.stride_b;
  key.stride_c = s.stride_c;
  key.align_a = alignment_of(b.data());  // column-major roles: A' = b, B' = a
  key.align_b = alignment_of(a.data());
  key.align_c = alignment_of(c.data());
  key.workspace = ctx.workspace_bytes();

  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);  // the bias pointer is set on a shared descriptor
  Plan& plan = cache.get(key, s);
  if (opt.bias != nullptr) {
    const void* bias = opt.bias->data();
    ONN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  }
  ONN_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt(), plan.desc.h, &opt.alpha, b.data(), plan.la.h, a.data(), plan.lb.h,
                                  &opt.beta, c.data(), plan.lc.h, c.data(), plan.lc.h, &plan.algo, ctx.workspace(),
                                  key.workspace, ctx.compute().cuda_stream()));
}

}  // namespace onn
