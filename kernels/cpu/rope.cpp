// RoPE on the CPU. The angle is p * inv_freq in fp32 for F32 data (as transformers computes
// it) and in double for F64.
#include <cmath>

#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/rope.h"

namespace onn {

using cpu_kernels::dispatch_float;
using cpu_kernels::ptr;

void rope_cpu(Tensor& x, const Tensor& positions, const Tensor& inv_freq, bool inverse) {
  dispatch_float(x.dtype(), inverse ? "rope_backward" : "rope_forward", [&](auto t) {
    using T = decltype(t);
    const int64_t n = x.dim(0), heads = x.dim(1), d = x.dim(2), half = inv_freq.dim(0);
    const int32_t* pos = ptr<const int32_t>(positions);
    const T* f = ptr<const T>(inv_freq);
    T* px = ptr<T>(x);
    cpu_kernels::for_rows(n, heads * d, [&](int64_t i) {
      for (int64_t k = 0; k < half; ++k) {
        const T angle = static_cast<T>(pos[i]) * f[k];
        const T c = std::cos(angle), s = inverse ? -std::sin(angle) : std::sin(angle);
        for (int64_t h = 0; h < heads; ++h) {
          T* row = px + (i * heads + h) * d;
          const T a = row[k], b = row[k + half];
          row[k] = a * c - b * s;
          row[k + half] = b * c + a * s;
        }
      }
    });
  });
}

}  // namespace onn
