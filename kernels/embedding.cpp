// Embedding: argument checks and dispatch.
#include "kernels/backends.h"
#include "kernels/embedding.h"

#include "kernels/op_check.h"

namespace onn {

void embedding_forward(Context& ctx, const Tensor& weight, const Tensor& ids, Tensor& out) {
  const OpCheck chk("embedding_forward", ctx, {{"weight", &weight}, {"ids", &ids}, {"out", &out}});
  chk.require(weight.rank() == 2, "weight must be (V, C)");
  chk.float_dtype(weight, "weight");
  chk.require(ids.rank() == 1, "ids must be (N)");
  chk.dtype(ids, "ids", DType::i32);
  chk.shape(out, "out", Shape{ids.dim(0), weight.dim(1)});
  chk.same_dtype(weight, "weight", out, "out");
  ONN_DISPATCH(chk, embedding_forward_cpu(weight, ids, out), embedding_forward_cuda(ctx, weight, ids, out));
}

void embedding_backward(Context& ctx, const Tensor& ids, const Tensor& dout, Tensor& dweight) {
  const OpCheck chk("embedding_backward", ctx, {{"ids", &ids}, {"dout", &dout}, {"dweight", &dweight}});
  chk.require(ids.rank() == 1, "ids must be (N)");
  chk.dtype(ids, "ids", DType::i32);
  chk.require(dout.rank() == 2 && dout.dim(0) == ids.dim(0), "dout must be (N, C) with N = ", ids.dim(0));
  chk.float_dtype(dout, "dout");
  chk.require(dweight.rank() == 2 && dweight.dim(1) == dout.dim(1), "dweight must be (V, C) with C = ", dout.dim(1));
  chk.dtype(dweight, "dweight", dout.dtype() == DType::f64 ? DType::f64 : DType::f32);
  ONN_DISPATCH(chk, embedding_backward_cpu(ids, dout, dweight), embedding_backward_cuda(ctx, ids, dout, dweight));
}

}  // namespace onn
