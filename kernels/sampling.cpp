// Sampling: argmax_rows checks and dispatch (the host-side filters live in cpu/sampling.cpp).
#include "kernels/backends.h"
#include "kernels/sampling.h"

#include "kernels/op_check.h"

namespace onn {

void argmax_rows(Context& ctx, const Tensor& logits, Tensor& out) {
  const OpCheck chk("argmax_rows", ctx, {{"logits", &logits}, {"out", &out}});
  chk.require(logits.rank() == 2 && logits.dim(1) >= 1, "logits must be (N, V)");
  chk.float_dtype(logits, "logits");
  chk.shape(out, "out", Shape{logits.dim(0)});
  chk.dtype(out, "out", DType::i32);
  ONN_DISPATCH(chk, argmax_rows_cpu(logits, out), argmax_rows_cuda(ctx, logits, out));
}

}  // namespace onn
