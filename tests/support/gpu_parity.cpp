// The CUDA parity harness.
#include "support/gpu_parity.h"

#include <cstring>

#include "kernels/reference.h"
#include "support/grad_check.h"

namespace onn::test {

Input input_from(Context& ctx, const Tensor& host, DType t) {
  const Tensor stored = host.to_dtype(t);
  Input in;
  in.ref = stored.to_dtype(DType::f64);
  in.dev = stored.to(ctx.device());
  return in;
}

Input make_input(Context& ctx, const Shape& shape, DType t, std::mt19937& rng, double scale) {
  return input_from(ctx, random64(shape, rng, scale), t);
}

Guarded::Guarded(Context& ctx, const Shape& shape, DType t) {
  whole = Tensor::empty(Shape{shape.numel() + 2 * kGuard}, t, ctx.device());
  whole.fill_bytes(0xff);
  view = whole.slice(kGuard, kGuard + shape.numel()).reshape(shape);
}

bool Guarded::guards_intact(Context& ctx) const {
  ctx.synchronize();
  const Tensor h = whole.to(Device::cpu());
  const auto* p = static_cast<const unsigned char*>(h.data());
  const size_t g = static_cast<size_t>(kGuard) * dtype_size(h.dtype());
  for (size_t i = 0; i < g; ++i)
    if (p[i] != 0xff || p[h.nbytes() - 1 - i] != 0xff) return false;
  return true;
}

double parity_error(Context& ctx, const Tensor& dev, const Tensor& ref64) {
  ctx.synchronize();
  return rel_error(dev.to(Device::cpu()), ref64);
}

double parity_tolerance(DType t) { return t == DType::f32 ? 1e-5 : 1e-2; }

bool bitwise_equal(Context& ctx, const Tensor& a, const Tensor& b) {
  ctx.synchronize();
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  return ha.nbytes() == hb.nbytes() && std::memcmp(ha.data(), hb.data(), ha.nbytes()) == 0;
}

}  // namespace onn::test
