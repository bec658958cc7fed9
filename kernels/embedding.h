// Token embedding lookup, and its backward as a deterministic scatter-add: on CUDA the ids
// are sorted (stable radix sort) and each distinct id's rows are summed in position order by
// one block, so no float atomics make results vary run to run.
#pragma once

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

// weight (V, C), ids (N) I32 -> out (N, C) of weight's dtype. On the CPU an id outside
// [0, V) throws; CUDA kernels cannot throw, so there such a row is written as zeros (ids
// come from the tokenizer, which checks them).
void embedding_forward(Context& ctx, const Tensor& weight, const Tensor& ids, Tensor& out);
// dweight (V, C) += scatter of dout (N, C) by ids. dweight is F32 (F64 for F64 dout) and
// accumulates: zero it first for a fresh gradient.
void embedding_backward(Context& ctx, const Tensor& ids, const Tensor& dout, Tensor& dweight);

}  // namespace onn
