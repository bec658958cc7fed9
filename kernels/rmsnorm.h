// RMSNorm, y = weight * x / sqrt(mean(x^2) + eps) over the last dim, and the fused
// residual-add + RMSNorm of a transformer block boundary. Statistics are fp32 (f64 for
// f64 data) whatever the data dtype; rstd is saved for the backward.
#pragma once

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

// The dtype of rstd and dweight for data of dtype t: F64 for F64, else F32.
DType norm_stat_dtype(DType t);

// x (N, C), weight (C), y (N, C) of x's dtype; rstd (N) of norm_stat_dtype.
void rmsnorm_forward(Context& ctx, const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd);
// residual (N, C) += x (N, C), then y = rmsnorm(residual): one pass over the residual stream.
// Its backward is rmsnorm_backward on the updated residual with accumulate_dx (the stream
// gradient collects the norm's contribution; the same tensor is then the gradient of x).
void add_rmsnorm_forward(Context& ctx, Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& y,
                         Tensor& rstd);
// dy (N, C) -> dx (N, C) (written, or added to when accumulate_dx) and, when dweight is
// non-null, dweight (C) of norm_stat_dtype (written). x is the normalised input.
void rmsnorm_backward(Context& ctx, const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor* dweight, bool accumulate_dx = false);

}  // namespace onn
