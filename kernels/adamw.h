// AdamW, fused: one pass reads the gradient and both moments and writes the parameter, the
// moments and (optionally) the parameter's low-precision compute copy. fp32 parameters and
// moments, bias correction, decoupled weight decay, as torch.optim.AdamW. The global gradient
// norm for clipping is a fixed-order reduction (bitwise reproducible).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

// Hyperparameters are doubles, as torch keeps them; CUDA kernels round them to float.
struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;         // 1-based step count after this update (bias correction)
  double grad_scale = 1.0;  // multiplies the gradient first: clipping, loss scaling
};

// param, m, v (n) F32 (F64 on the CPU for tests), grad (n) param's dtype or BF16 (CUDA);
// param_copy (n) BF16 or null: refreshed with the new parameter in the same pass.
void adamw_step(Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                Tensor* param_copy = nullptr);

// sqrt of the sum of squares of every element of every gradient (F32, F64 or BF16), as a
// host double (synchronizes the compute stream).
double global_grad_norm(Context& ctx, const std::vector<const Tensor*>& grads);
// The grad_scale that clips to max_norm: min(1, max_norm / (norm + 1e-6)); 1 when max_norm
// <= 0 (clipping off).
double clip_scale(double norm, double max_norm);

}  // namespace onn
