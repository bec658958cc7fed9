// Parity harness for CUDA ops against the CPU F64 reference: inputs drawn fresh (never zero)
// and rounded to the tested dtype so both sides see the same values; device outputs live
// between poisoned guard regions; comparisons by normalized error (F32 below 1e-5, BF16
// below 1e-2, any NaN fails).
#pragma once

#include <random>

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn::test {

// Host F32 values drawn fresh, rounded through `t`: .dev is the device tensor of dtype t,
// .ref the same values as a CPU F64 tensor.
struct Input {
  Tensor dev, ref;
};
Input make_input(Context& ctx, const Shape& shape, DType t, std::mt19937& rng, double scale = 1.0);
// The same for given CPU values (any float dtype).
Input input_from(Context& ctx, const Tensor& host, DType t);

// Every read-back below synchronizes ctx first: op temporaries are ordered on ctx's compute
// stream only, and the copies use streams of their own.

// A device tensor `view` inside a buffer whose every byte is 0xff (NaN in F32 and BF16), with
// kGuard elements before and after the view.
struct Guarded {
  static constexpr int64_t kGuard = 64;
  Tensor whole, view;
  Guarded(Context& ctx, const Shape& shape, DType t);
  // True when every guard byte is still 0xff.
  bool guards_intact(Context& ctx) const;
};

// Normalized error of a device tensor against a CPU F64 reference, below the dtype's bound.
double parity_error(Context& ctx, const Tensor& dev, const Tensor& ref64);
double parity_tolerance(DType t);
// True when two device tensors hold the same bytes.
bool bitwise_equal(Context& ctx, const Tensor& a, const Tensor& b);

}  // namespace onn::test
