// SwiGLU on the CPU. silu(g) = g * sigmoid(g); d/dg [silu(g) u] = u * s * (1 + g * (1 - s)).
// F32 rows run a vectorised body (exp from vec_math.h, cloned per instruction set); F64 (the
// finite-difference tests) the same formula with std::exp. Threaded over rows.
#include <cmath>
#include <type_traits>

#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/swiglu.h"

namespace onn {

namespace {

template <typename T>
T sigmoid(T g) {
  if constexpr (std::is_same_v<T, float>)
    return 1.0f / (1.0f + cpu_kernels::exp_approx(-g));
  else
    return T(1) / (T(1) + std::exp(-g));
}

template <typename T>
void forward_row(const T* __restrict g, const T* __restrict u, int64_t f, T* __restrict out) {
  for (int64_t j = 0; j < f; ++j) out[j] = g[j] * sigmoid(g[j]) * u[j];
}

template <typename T>
void backward_row(const T* __restrict g, const T* __restrict u, const T* __restrict d, int64_t f,
                  T* __restrict dg, T* __restrict du) {
  for (int64_t j = 0; j < f; ++j) {
    const T s = sigmoid(g[j]);
    dg[j] = d[j] * u[j] * s * (T(1) + g[j] * (T(1) - s));
    du[j] = d[j] * g[j] * s;
  }
}

// Rows [begin, end).
template <typename T>
void rows(const SwigluArgs& a, bool backward, int64_t begin, int64_t end) {
  const T* g = static_cast<const T*>(a.gate);
  const T* u = static_cast<const T*>(a.up);
  for (int64_t i = begin; i < end; ++i) {
    if (!backward)
      forward_row(g + i * a.ld_in, u + i * a.ld_in, a.f, static_cast<T*>(a.out) + i * a.f);
    else
      backward_row(g + i * a.ld_in, u + i * a.ld_in, static_cast<const T*>(a.dout) + i * a.f, a.f,
                   static_cast<T*>(a.dgate) + i * a.ld_din, static_cast<T*>(a.dup) + i * a.ld_din);
  }
}

ONN_CPU_CLONES void rows_f32(const SwigluArgs& a, bool backward, int64_t begin, int64_t end) {
  rows<float>(a, backward, begin, end);
}

}  // namespace

void swiglu_cpu(const SwigluArgs& a, bool backward) {
  ONN_CHECK_ARG(a.dtype == DType::f32 || a.dtype == DType::f64, backward ? "swiglu_backward" : "swiglu_forward",
                ": CPU kernels take F32 or F64, got ", dtype_name(a.dtype));
  parallel_for(a.n, cpu_kernels::row_grain(a.f), [&](int64_t, int64_t begin, int64_t end) {
    if (a.dtype == DType::f32)
      rows_f32(a, backward, begin, end);
    else
      rows<double>(a, backward, begin, end);
  });
}

}  // namespace onn
