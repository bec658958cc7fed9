// Elementwise ops: dtype casts, the residual add, scaling, filling and dropout. Each is its
// own backward (add passes the gradient to both inputs; scale and dropout apply the same
// factor or mask to the gradient), so there is no separate backward entry point.
#pragma once

#include <cstdint>

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

// dst = src converted to dst's dtype; same numel. CUDA: F32 <-> BF16 (and same-type
// copies); CPU: any float dtype to any float dtype.
void cast(Context& ctx, const Tensor& src, Tensor& dst);
// out = a + b, all the same shape and dtype; out may be a or b (the residual add in place).
void add(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);
// x *= s, in place.
void scale(Context& ctx, Tensor& x, float s);
// Every element of x = value (rounded to x's dtype).
void fill(Context& ctx, Tensor& x, float value);
// out = x * keep / (1 - p) with keep = counter_uniform(seed, i) >= p for element i; out may
// be x. The same (p, seed) on the gradient is the backward. p in [0, 1).
void dropout(Context& ctx, const Tensor& x, float p, uint64_t seed, Tensor& out);

}  // namespace onn
