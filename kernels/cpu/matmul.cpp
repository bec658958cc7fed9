// matmul on the CPU: OpenBLAS sgemm (F32) or dgemm (F64, for finite-difference tests of the
// ops built on matmul), row-major, bias added after; with CpuMatmul::bf16, F32 products of
// several rows go through oneDNN's bf16 GEMM (cpu/matmul_bf16.cpp) on bf16 copies of a and b
// (a stored BF16 b as it is). OpenBLAS runs single-threaded; the threads are the CPU pool's
// (runtime/parallel.h), over tiles of C whose size the shape alone fixes, so every element of
// C comes from one BLAS call over the whole of K whatever the thread count.
// One pool for every CPU kernel also keeps OpenBLAS's spinning workers from competing with it.
#include <cblas.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/parallel.h"

#include "kernels/backends.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/matmul.h"
#if ONN_HAVE_ONEDNN
#include "kernels/cpu/matmul_bf16.h"
#endif
#include "runtime/error.h"

namespace onn {

namespace {

void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
          float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
              ldb, beta, c, ldc);
}
void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b, int ldb,
          double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
              ldb, beta, c, ldc);
}
// bf16 inputs (raw bits), f32 accumulation and output.
void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const uint16_t* a, int lda, const uint16_t* b, int ldb,
          float beta, float* c, int ldc) {
#if ONN_HAVE_ONEDNN
  cpu_bf16_gemm({ta, tb, m, n, k, lda, ldb, ldc, alpha, beta}, a, b, c);
#else
  (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb, (void)beta,
      (void)c, (void)ldc;
  ONN_ASSERT(false, "a bf16 GEMM in a build without oneDNN");
#endif
}

CpuMatmul g_cpu_matmul = CpuMatmul::f32;

// Tiles of C: kMaxTile square, halved (down to kMinTile) while there are fewer than kMinTiles
// of them, or one tile for a product too small to be worth splitting. Larger tiles pack less
// (each BLAS call packs its block of A and of B); enough tiles keep the threads busy. The tiles
// depend on the shape alone.
constexpr int64_t kMaxTile = 256, kMinTile = 64, kMinTiles = 8;
constexpr int64_t kMinSplitMacs = int64_t{1} << 21;

struct Tiling {
  int64_t rows, cols, row_tiles, col_tiles;
};

Tiling tiling(const MatmulShape& s) {
  if (s.m * s.n * s.k < kMinSplitMacs) return {s.m, s.n, 1, 1};
  for (int64_t tile = kMaxTile;; tile /= 2) {
    const int64_t rows = std::min(s.m, tile), cols = std::min(s.n, tile);
    const Tiling t{rows, cols, (s.m + rows - 1) / rows, (s.n + cols - 1) / cols};
    if (t.row_tiles * t.col_tiles * s.batch >= kMinTiles || tile <= kMinTile) return t;
  }
}

template <typename T>
void gemv(bool trans, int m, int n, T alpha, const T* a, int lda, const T* x, T beta, T* y) {
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, m, n, alpha, a, lda, x, 1, beta, y, 1);
  else
    cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, m, n, alpha, a, lda, x, 1, beta, y, 1);
}

// One row of C (decode): a matrix-vector product, which reads every element of B once (sgemm
// would pack B first), split over blocks of C's columns of about kGemvPartElements of B each.
constexpr int64_t kGemvPartElements = int64_t{1} << 16;

template <typename T>
void run_row(const MatmulShape& s, const T* pa, const T* pb, T* pc, const MatmulOptions& opt) {
  const int64_t cols = std::max<int64_t>(16, kGemvPartElements / std::max<int64_t>(s.k, 1));
  const int64_t col_parts = (s.n + cols - 1) / cols;
  const T* bias = opt.bias != nullptr ? static_cast<const T*>(opt.bias->data()) : nullptr;
  parallel_for(s.batch * col_parts, 1, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / col_parts, c0 = item % col_parts * cols, nc = std::min(cols, s.n - c0);
      const T* x = pa + i * s.stride_a;  // (1, K) or, transposed, (K, 1): K contiguous values either way
      T* y = pc + i * s.stride_c + c0;
      const T* b = pb + i * s.stride_b;
      // trans_b: B is (N, K), y = B[c0 : c0 + nc] x; else B is (K, N), y = B[:, c0 : c0 + nc]^T x.
      if (opt.trans_b)
        gemv<T>(false, static_cast<int>(nc), static_cast<int>(s.k), static_cast<T>(opt.alpha), b + c0 * s.k,
                static_cast<int>(s.k), x, static_cast<T>(opt.beta), y);
      else
        gemv<T>(true, static_cast<int>(s.k), static_cast<int>(nc), static_cast<T>(opt.alpha), b + c0,
                static_cast<int>(s.n), x, static_cast<T>(opt.beta), y);
      if (bias != nullptr)
        for (int64_t j = 0; j < nc; ++j) y[j] += bias[c0 + j];
    }
  });
}

// One tile of C: rows [r0, r0 + rows) and columns [c0, c0 + cols) of batch entry i; inputs of
// type In (T, or bf16 bits for an f32 C).
template <typename In, typename T>
void tile_product(const MatmulShape& s, const In* pa, const In* pb, T* pc, const MatmulOptions& opt, int64_t i,
                  int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
  const int lda = static_cast<int>(opt.trans_a ? s.m : s.k);
  const int ldb = static_cast<int>(opt.trans_b ? s.k : s.n);
  const int ldc = static_cast<int>(s.n);
  T* ci = pc + i * s.stride_c + r0 * ldc + c0;
  if (s.k == 0) {
    // gemm with k == 0 still scales c by beta; do it explicitly for clarity.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j)
        ci[r * ldc + j] = opt.beta == 0.0f ? T(0) : static_cast<T>(opt.beta) * ci[r * ldc + j];
  } else {
    const In* ai = pa + i * s.stride_a + (opt.trans_a ? r0 : r0 * lda);
    const In* bi = pb + i * s.stride_b + (opt.trans_b ? c0 * ldb : c0);
    gemm(opt.trans_a, opt.trans_b, static_cast<int>(rows), static_cast<int>(cols), static_cast<int>(s.k),
         static_cast<T>(opt.alpha), ai, lda, bi, ldb, static_cast<T>(opt.beta), ci, ldc);
  }
  if (opt.bias != nullptr) {
    const T* bias = static_cast<const T*>(opt.bias->data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) ci[r * ldc + j] += bias[c0 + j];
  }
}

// Every tile of C, on the pool.
template <typename In, typename T>
void run_tiles(const MatmulShape& s, const In* pa, const In* pb, T* pc, const MatmulOptions& opt) {
  const Tiling t = tiling(s);
  const int64_t per_batch = t.row_tiles * t.col_tiles;
  parallel_for(s.batch * per_batch, 1, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / per_batch, r0 = item % per_batch / t.col_tiles * t.rows,
                    c0 = item % t.col_tiles * t.cols;
      tile_product(s, pa, pb, pc, opt, i, r0, std::min(t.rows, s.m - r0), c0, std::min(t.cols, s.n - c0));
    }
  });
}

ONN_CPU_CLONES void round_to_bf16(const float* __restrict x, int64_t n, uint16_t* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_bf16_bits(x[i]);
}

// `n` floats as bf16 bits (f32_to_bf16_bits), on the pool, into a buffer of the calling
// thread's that grows as needed.
const uint16_t* to_bf16(const float* x, int64_t n, std::vector<uint16_t>& out) {
  if (out.size() < static_cast<size_t>(n)) out.resize(static_cast<size_t>(n));
  uint16_t* y = out.data();
  parallel_for(n, int64_t{1} << 16,
               [&](int64_t, int64_t begin, int64_t end) { round_to_bf16(x + begin, end - begin, y + begin); });
  return y;
}

// Products worth the bf16 path: several rows, and enough work to split into tiles.
bool bf16_product(const MatmulShape& s) { return s.m > 1 && s.k > 0 && s.m * s.n * s.k >= kMinSplitMacs; }

// An F32 a with a stored BF16 b (cpu_bf16_weights): the bf16 GEMM on b as it is, or, for a
// product below its size, sgemm on b widened exactly.
void run_bf16_weights(const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt) {
  const float* pa = a.data_as<float>();
  const auto* pb = static_cast<const uint16_t*>(b.data());
  float* pc = c.data_as<float>();
  if (bf16_product(s)) {
    thread_local std::vector<uint16_t> a16;
    return run_tiles(s, to_bf16(pa, a.numel(), a16), pb, pc, opt);
  }
  thread_local std::vector<float> wide;
  if (wide.size() < static_cast<size_t>(b.numel())) wide.resize(static_cast<size_t>(b.numel()));
  for (int64_t i = 0; i < b.numel(); ++i) wide[static_cast<size_t>(i)] = bf16_bits_to_f32(pb[i]);
  if (s.m == 1 && s.k > 0) return run_row<float>(s, pa, wide.data(), pc, opt);
  run_tiles(s, pa, wide.data(), pc, opt);
}

template <typename T>
void run(const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt) {
  const T* pa = a.numel() ? static_cast<const T*>(a.data()) : nullptr;
  const T* pb = b.numel() ? static_cast<const T*>(b.data()) : nullptr;
  T* pc = static_cast<T*>(c.data());
  if (s.m == 1 && s.k > 0) return run_row<T>(s, pa, pb, pc, opt);
  if constexpr (std::is_same_v<T, float>) {
    if (g_cpu_matmul == CpuMatmul::bf16 && bf16_product(s)) {
      thread_local std::vector<uint16_t> a16, b16;
      return run_tiles(s, to_bf16(pa, a.numel(), a16), to_bf16(pb, b.numel(), b16), pc, opt);
    }
  }
  run_tiles(s, pa, pb, pc, opt);
}

}  // namespace

const char* cpu_matmul_name(CpuMatmul p) { return p == CpuMatmul::bf16 ? "bf16" : "f32"; }

std::string cpu_bf16_matmul_missing() {
#if ONN_HAVE_ONEDNN
  if (cpu_bf16_gemm_impl().empty()) return "oneDNN has no bf16 matmul for this CPU";
  return "";
#else
  return "this build has no oneDNN (install libdnnl-dev and configure with -DONN_ONEDNN=ON)";
#endif
}

void set_cpu_matmul(CpuMatmul p) {
  if (p == CpuMatmul::bf16) {
    const std::string missing = cpu_bf16_matmul_missing();
    ONN_CHECK_ARG(missing.empty(), "--cpu-matmul bf16: ", missing);
  }
  g_cpu_matmul = p;
}

CpuMatmul cpu_matmul() { return g_cpu_matmul; }

bool cpu_bf16_weights(Device device, DType x, DType w) {
  return device.is_cpu() && g_cpu_matmul == CpuMatmul::bf16 && x == DType::f32 && w == DType::bf16;
}

void matmul_cpu(const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt) {
  const bool f32 = a.dtype() == DType::f32 && c.dtype() == DType::f32;
  const bool f64 = a.dtype() == DType::f64 && c.dtype() == DType::f64;
  ONN_CHECK_ARG(f32 || f64, "matmul on the CPU takes F32 or F64 tensors (one dtype), got a ", dtype_name(a.dtype()),
                " and c ", dtype_name(c.dtype()));
  ONN_CHECK_ARG(s.m <= INT32_MAX && s.n <= INT32_MAX && s.k <= INT32_MAX, "matmul: dims exceed the BLAS int range");
  if (s.m == 0 || s.n == 0) return;
  static std::once_flag single_threaded;
  std::call_once(single_threaded, [] { openblas_set_num_threads(1); });
  if (f32 && b.dtype() == DType::bf16)
    run_bf16_weights(s, a, b, c, opt);
  else if (f32)
    run<float>(s, a, b, c, opt);
  else
    run<double>(s, a, b, c, opt);
}

}  // namespace onn
