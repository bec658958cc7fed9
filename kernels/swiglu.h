// SwiGLU: out = silu(gate) * up, for separate gate and up tensors (LLaMA) and for the
// concatenated gate_up layout of Phi-3/Phi-4 (gate is the first F columns, up the last F).
#pragma once

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

// gate (N, F), up (N, F), out (N, F), one dtype.
void swiglu_forward(Context& ctx, const Tensor& gate, const Tensor& up, Tensor& out);
// dout (N, F) -> dgate (N, F), dup (N, F) (written).
void swiglu_backward(Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                     Tensor& dup);
// gate_up (N, 2F) -> out (N, F).
void swiglu_forward(Context& ctx, const Tensor& gate_up, Tensor& out);
// dout (N, F) -> dgate_up (N, 2F) (written).
void swiglu_backward(Context& ctx, const Tensor& gate_up, const Tensor& dout, Tensor& dgate_up);

}  // namespace onn
