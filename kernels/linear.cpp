// Linear: checks, then matmul calls (both backends).
#include "kernels/linear.h"

#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/op_check.h"

namespace onn {

void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const OpCheck chk("linear_forward", ctx, {{"x", &x}, {"w", &w}, {"bias", bias}, {"y", &y}});
  chk.require(x.rank() == 2 && w.rank() == 2 && x.dim(1) == w.dim(1), "x must be (N, in) and w (out, in)");
  chk.float_dtype(x, "x");
  chk.weight_dtype(x, w);
  chk.shape(y, "y", Shape{x.dim(0), w.dim(0)});
  chk.same_dtype(x, "x", y, "y");
  if (bias) {
    chk.shape(*bias, "bias", Shape{w.dim(0)});
    chk.same_dtype(x, "x", *bias, "bias");
  }
  MatmulOptions o;
  o.trans_b = true;
  o.bias = bias;
  matmul(ctx, x, w, y, o);
}

void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy, const LinearGrads& g) {
  const OpCheck chk("linear_backward", ctx,
                    {{"x", &x}, {"w", &w}, {"dy", &dy}, {"dx", g.dx}, {"dw", g.dw}, {"dbias", g.dbias}});
  chk.require(x.rank() == 2 && w.rank() == 2 && x.dim(1) == w.dim(1), "x must be (N, in) and w (out, in)");
  const int64_t n = x.dim(0), out = w.dim(0);
  chk.float_dtype(x, "x");
  chk.weight_dtype(x, w);
  chk.shape(dy, "dy", Shape{n, out});
  chk.same_dtype(x, "x", dy, "dy");
  if (g.dx) {
    chk.shape(*g.dx, "dx", x.shape());
    chk.same_dtype(x, "x", *g.dx, "dx");
  }
  const auto grad_dtype_ok = [&](const Tensor& t) { return t.dtype() == x.dtype() || t.dtype() == DType::f32; };
  if (g.dw) {
    chk.shape(*g.dw, "dw", w.shape());
    chk.require(grad_dtype_ok(*g.dw), "dw must be x's dtype or F32");
  }
  if (g.dbias) {
    chk.shape(*g.dbias, "dbias", Shape{out});
    chk.require(grad_dtype_ok(*g.dbias), "dbias must be x's dtype or F32");
  }
  if (g.dx) {
    MatmulOptions o;  // (N, out) @ (out, in)
    o.beta = g.accumulate_dx ? 1.0f : 0.0f;
    matmul(ctx, dy, w, *g.dx, o);
  }
  if (g.dw) {
    MatmulOptions o;  // (N, out)^T @ (N, in)
    o.trans_a = true;
    o.beta = g.accumulate_dw ? 1.0f : 0.0f;
    matmul(ctx, dy, x, *g.dw, o);
  }
  if (g.dbias) {
    Tensor ones = Tensor::empty(Shape{1, n}, dy.dtype(), ctx.allocator());
    fill(ctx, ones, 1.0f);
    Tensor db = g.dbias->reshape({1, out});
    MatmulOptions o;  // (1, N) @ (N, out)
    o.beta = g.accumulate_dw ? 1.0f : 0.0f;
    matmul(ctx, ones, dy, db, o);
  }
}

}  // namespace onn
