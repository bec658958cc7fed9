// AdamW on the CPU, in the element type of the parameter (float or double), elements threaded
// (each computed alone), the parameter's BF16 or F32 copy written in the same pass; the sum of
// squares over fixed parts, combined in part order.
#include <cmath>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/vec_math.h"

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
    // The copy's rounding is store_from_double's (via float), written without its dispatch.
    uint16_t* copy16 = param_copy && param_copy->dtype() == DType::bf16 ? ptr<uint16_t>(*param_copy) : nullptr;
    float* copy32 = param_copy && param_copy->dtype() == DType::f32 ? ptr<float>(*param_copy) : nullptr;
    parallel_for(param.numel(), cpu_kernels::kPartElements, [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T gi = g[i] * static_cast<T>(cfg.grad_scale);
        pm[i] = b1 * pm[i] + omb1 * gi;
        pv[i] = b2 * pv[i] + omb2 * gi * gi;
        const T denom = std::sqrt(pv[i]) / bc2_sqrt + static_cast<T>(cfg.eps);
        p[i] = p[i] * decay - step_size * pm[i] / denom;
        if (copy16) copy16[i] = f32_to_bf16_bits(static_cast<float>(p[i]));
        if (copy32) copy32[i] = static_cast<float>(p[i]);
      }
    });
  });
}

namespace {

// x[begin, end)'s squares summed in double over fixed lanes (vectorisable, and the same bits
// whatever the threads). X: a pointer, or a reader that widens stored bits.
template <typename X>
double part_sum_squares(X x, int64_t begin, int64_t end) {
  return cpu_kernels::lane_sum_of<double>(end - begin, [&](int64_t i) {
    const double v = static_cast<double>(x[begin + i]);
    return v * v;
  });
}

struct Bf16Reader {
  const uint16_t* bits;
  float operator[](int64_t i) const { return bf16_bits_to_f32(bits[i]); }
};

// Parts summed in parallel, then the parts in order.
template <typename X>
double sum_squares_parts(X x, int64_t n) {
  std::vector<double> partial(static_cast<size_t>(parallel_parts(n, cpu_kernels::kPartElements)));
  parallel_for(n, cpu_kernels::kPartElements, [&](int64_t part, int64_t begin, int64_t end) {
    partial[static_cast<size_t>(part)] = part_sum_squares(x, begin, end);
  });
  double s = 0;
  for (const double p : partial) s += p;
  return s;
}

}  // namespace

double sum_squares_cpu(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f32: return sum_squares_parts(ptr<const float>(t), t.numel());
    case DType::f64: return sum_squares_parts(ptr<const double>(t), t.numel());
    case DType::bf16: return sum_squares_parts(Bf16Reader{ptr<const uint16_t>(t)}, t.numel());
    default:
      throw InvalidArgument("global_grad_norm: F32, F64 or BF16 gradients, not " + std::string(dtype_name(t.dtype())));
  }
}

}  // namespace onn
