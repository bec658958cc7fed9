// RoPE: frequency tables (with linear and llama3 scaling), argument checks and dispatch.
#include "kernels/backends.h"
#include "kernels/rope.h"

#include <cmath>
#include <numbers>

#include "kernels/op_check.h"

namespace onn {

int64_t rope_rotary_dims(const RopeConfig& cfg) {
  ONN_CHECK_ARG(cfg.head_dim > 0 && cfg.head_dim % 2 == 0, "rope: head_dim must be positive and even, got ",
                cfg.head_dim);
  ONN_CHECK_ARG(cfg.theta > 0, "rope: rope_theta must be positive, got ", cfg.theta);
  ONN_CHECK_ARG(cfg.partial_rotary_factor > 0 && cfg.partial_rotary_factor <= 1,
                "rope: partial_rotary_factor must be in (0, 1], got ", cfg.partial_rotary_factor);
  int64_t r = static_cast<int64_t>(static_cast<double>(cfg.head_dim) * cfg.partial_rotary_factor);
  r -= r % 2;
  ONN_CHECK_ARG(r >= 2, "rope: partial_rotary_factor ", cfg.partial_rotary_factor, " leaves no rotary dims");
  return r;
}

std::vector<double> rope_inv_freq(const RopeConfig& cfg) {
  const int64_t r = rope_rotary_dims(cfg);
  const RopeScaling& s = cfg.scaling;
  std::vector<double> f(static_cast<size_t>(r / 2));
  for (int64_t i = 0; i < r / 2; ++i)
    f[static_cast<size_t>(i)] = 1.0 / std::pow(cfg.theta, static_cast<double>(2 * i) / static_cast<double>(r));
  if (s.type == RopeScaling::Type::linear) {
    ONN_CHECK_ARG(s.factor > 0, "rope_scaling linear: factor must be positive, got ", s.factor);
    for (double& v : f) v /= s.factor;
  } else if (s.type == RopeScaling::Type::llama3) {
    ONN_CHECK_ARG(s.factor > 0 && s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor &&
                      s.original_max_position_embeddings > 0,
                  "rope_scaling llama3: needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                  "original_max_position_embeddings > 0");
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
    for (double& v : f) {
      const double wavelen = 2.0 * std::numbers::pi / v;
      if (wavelen < high_wavelen) continue;  // high frequencies stay
      if (wavelen > low_wavelen) {
        v /= s.factor;  // low frequencies are scaled
      } else {          // in between: interpolate
        const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        v = (1.0 - smooth) * v / s.factor + smooth * v;
      }
    }
  }
  return f;
}

Tensor rope_inv_freq_tensor(Context& ctx, const RopeConfig& cfg, DType dtype) {
  const std::vector<double> f = rope_inv_freq(cfg);
  Tensor host = Tensor::empty(Shape{static_cast<int64_t>(f.size())}, dtype);
  for (size_t i = 0; i < f.size(); ++i) store_from_double(host.data(), dtype, i, f[i]);
  return host.to(ctx.device());
}

namespace {
void run(Context& ctx, const char* op, Tensor& x, const Tensor& positions, const Tensor& inv_freq, bool inverse) {
  const OpCheck chk(op, ctx, {{"x", &x}, {"positions", &positions}, {"inv_freq", &inv_freq}});
  chk.require(x.rank() == 3, "x must be (N, heads, D)");
  chk.float_dtype(x, "x");
  chk.shape(positions, "positions", Shape{x.dim(0)});
  chk.dtype(positions, "positions", DType::i32);
  chk.require(inv_freq.rank() == 1 && inv_freq.dim(0) >= 1 && 2 * inv_freq.dim(0) <= x.dim(2),
              "inv_freq must be (R/2) with R <= D");
  chk.dtype(inv_freq, "inv_freq", x.dtype() == DType::f64 ? DType::f64 : DType::f32);
  ONN_DISPATCH(chk, rope_cpu(x, positions, inv_freq, inverse), rope_cuda(ctx, x, positions, inv_freq, inverse));
}
}  // namespace

void rope_forward(Context& ctx, Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  run(ctx, "rope_forward", x, positions, inv_freq, false);
}

void rope_backward(Context& ctx, Tensor& dx, const Tensor& positions, const Tensor& inv_freq) {
  run(ctx, "rope_backward", dx, positions, inv_freq, true);
}

}  // namespace onn
