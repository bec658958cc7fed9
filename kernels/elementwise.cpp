// Elementwise ops: argument checks and dispatch.
#include "kernels/backends.h"
#include "kernels/elementwise.h"

#include "kernels/op_check.h"

namespace onn {

void cast(Context& ctx, const Tensor& src, Tensor& dst) {
  const OpCheck chk("cast", ctx, {{"src", &src}, {"dst", &dst}});
  chk.require(src.numel() == dst.numel(), "src and dst must have the same number of elements");
  chk.require(dtype_is_float(src.dtype()) && dtype_is_float(dst.dtype()), "cast converts between float dtypes");
  chk.require(!src.overlaps(dst) || src.dtype() == dst.dtype(), "dst aliases src");
  if (!chk.cpu()) {
    chk.float_dtype(src, "src");
    chk.float_dtype(dst, "dst");
  }
  ONN_DISPATCH(chk, cast_cpu(src, dst), cast_cuda(ctx, src, dst));
}

void add(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  const OpCheck chk("add", ctx, {{"a", &a}, {"b", &b}, {"out", &out}});
  chk.require(a.shape() == b.shape() && a.shape() == out.shape(), "shapes differ");
  chk.same_dtype(a, "a", b, "b");
  chk.same_dtype(a, "a", out, "out");
  chk.float_dtype(a, "a");
  ONN_DISPATCH(chk, add_cpu(a, b, out), add_cuda(ctx, a, b, out));
}

void scale(Context& ctx, Tensor& x, float s) {
  const OpCheck chk("scale", ctx, {{"x", &x}});
  chk.float_dtype(x, "x");
  ONN_DISPATCH(chk, scale_cpu(x, s), scale_cuda(ctx, x, s));
}

void fill(Context& ctx, Tensor& x, float value) {
  const OpCheck chk("fill", ctx, {{"x", &x}});
  chk.float_dtype(x, "x");
  ONN_DISPATCH(chk, fill_cpu(x, value), fill_cuda(ctx, x, value));
}

void dropout(Context& ctx, const Tensor& x, float p, uint64_t seed, Tensor& out) {
  const OpCheck chk("dropout", ctx, {{"x", &x}, {"out", &out}});
  chk.require(p >= 0.0f && p < 1.0f, "p must be in [0, 1), got ", p);
  chk.require(x.shape() == out.shape(), "x and out shapes differ");
  chk.same_dtype(x, "x", out, "out");
  chk.float_dtype(x, "x");
  ONN_DISPATCH(chk, dropout_cpu(x, p, seed, out), dropout_cuda(ctx, x, p, seed, out));
}

}  // namespace onn
