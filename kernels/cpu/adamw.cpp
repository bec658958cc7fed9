// AdamW on the CPU, in the element type of the parameter (float or double), elements threaded
// (each computed alone); the sum of squares stays one serial sum.
#include <cmath>

#include "kernels/adamw.h"
#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"

namespace onn {

using cpu_kernels::ptr;

void adamw_cpu(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg, Tensor* param_copy) {
  cpu_kernels::dispatch_float(param.dtype(), "adamw_step", [&](auto t) {
    using T = decltype(t);
    T *p = ptr<T>(param), *pm = ptr<T>(m), *pv = ptr<T>(v);
    const T* g = ptr<const T>(grad);
    const T b1 = static_cast<T>(cfg.beta1), b2 = static_cast<T>(cfg.beta2);
    // 1 - beta in double, then rounded (in F32, 1 - float(0.999) is 1.3e-5 away from 0.001).
    const T omb1 = static_cast<T>(1.0 - cfg.beta1), omb2 = static_cast<T>(1.0 - cfg.beta2);
    const T bc1 = T(1) - std::pow(b1, static_cast<T>(cfg.step));
    const T bc2 = T(1) - std::pow(b2, static_cast<T>(cfg.step));
    const T step_size = static_cast<T>(cfg.lr) / bc1, bc2_sqrt = std::sqrt(bc2);
    const T decay = T(1) - static_cast<T>(cfg.lr) * static_cast<T>(cfg.weight_decay);
    parallel_for(param.numel(), cpu_kernels::kPartElements, [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T gi = g[i] * static_cast<T>(cfg.grad_scale);
        pm[i] = b1 * pm[i] + omb1 * gi;
        pv[i] = b2 * pv[i] + omb2 * gi * gi;
        const T denom = std::sqrt(pv[i]) / bc2_sqrt + static_cast<T>(cfg.eps);
        p[i] = p[i] * decay - step_size * pm[i] / denom;
        if (param_copy) store_from_double(param_copy->data(), param_copy->dtype(), static_cast<size_t>(i), p[i]);
      }
    });
  });
}

double sum_squares_cpu(const Tensor& t) {
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double x = load_as_double(t.data(), t.dtype(), static_cast<size_t>(i));
    s += x * x;
  }
  return s;
}

}  // namespace onn
