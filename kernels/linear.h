// Linear layer on the foundation GEMM: y = x W^T (+ bias), and its backward, dX = dY W and
// dW = dY^T X (dW only for a trained weight), dbias = column sums of dY (a ones-vector GEMM,
// so it is deterministic). Backends differ only inside matmul.
#pragma once

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

// x (N, in), w (out, in), bias (out) or null, y (N, out); one dtype, except a BF16 w under
// cpu_bf16_weights (kernels/matmul.h), forward and backward.
void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);

struct LinearGrads {
  Tensor* dx = nullptr;       // (N, in), x's dtype
  bool accumulate_dx = false;  // dx += (inputs shared by several layers: q, k, v)
  Tensor* dw = nullptr;       // (out, in), x's dtype or F32 (the fp32 master grads of a bf16 w)
  bool accumulate_dw = false;  // gradient accumulation across micro-batches
  Tensor* dbias = nullptr;    // (out), dw's dtype
};
// dy (N, out). Any of the gradients may be null.
void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy, const LinearGrads& g);

}  // namespace onn
