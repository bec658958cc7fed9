// SwiGLU on the CPU. silu(g) = g * sigmoid(g); d/dg [silu(g) u] = u * s * (1 + g * (1 - s)).
#include <cmath>

#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/swiglu.h"

namespace onn {

void swiglu_cpu(const SwigluArgs& a, bool backward) {
  cpu_kernels::dispatch_float(a.dtype, backward ? "swiglu_backward" : "swiglu_forward", [&](auto t) {
    using T = decltype(t);
    const T* g = static_cast<const T*>(a.gate);
    const T* u = static_cast<const T*>(a.up);
    cpu_kernels::for_rows(a.n, a.f, [&](int64_t i) {
      for (int64_t j = 0; j < a.f; ++j) {
        const T gv = g[i * a.ld_in + j], uv = u[i * a.ld_in + j];
        const T s = T(1) / (T(1) + std::exp(-gv));
        if (!backward) {
          static_cast<T*>(a.out)[i * a.f + j] = gv * s * uv;
        } else {
          const T d = static_cast<const T*>(a.dout)[i * a.f + j];
          static_cast<T*>(a.dgate)[i * a.ld_din + j] = d * uv * s * (T(1) + gv * (T(1) - s));
          static_cast<T*>(a.dup)[i * a.ld_din + j] = d * gv * s;
        }
      }
    });
  });
}

}  // namespace onn
