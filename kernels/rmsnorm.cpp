// RMSNorm: argument checks and dispatch.
#include "kernels/backends.h"
#include "kernels/rmsnorm.h"

#include "kernels/op_check.h"

namespace onn {

DType norm_stat_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

namespace {
void check_forward(const OpCheck& chk, const Tensor& x, const Tensor& weight, float eps, const Tensor& y,
                   const Tensor& rstd) {
  chk.require(x.rank() == 2, "x must be (N, C)");
  const int64_t n = x.dim(0), c = x.dim(1);
  chk.float_dtype(x, "x");
  chk.shape(weight, "weight", Shape{c});
  chk.same_dtype(x, "x", weight, "weight");
  chk.shape(y, "y", Shape{n, c});
  chk.same_dtype(x, "x", y, "y");
  chk.shape(rstd, "rstd", Shape{n});
  chk.dtype(rstd, "rstd", norm_stat_dtype(x.dtype()));
  chk.require(eps > 0.0f, "eps must be positive");
}
}  // namespace

void rmsnorm_forward(Context& ctx, const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd) {
  const OpCheck chk("rmsnorm_forward", ctx, {{"x", &x}, {"weight", &weight}, {"y", &y}, {"rstd", &rstd}});
  check_forward(chk, x, weight, eps, y, rstd);
  ONN_DISPATCH(chk, rmsnorm_forward_cpu(x, nullptr, nullptr, weight, eps, y, rstd),
               rmsnorm_forward_cuda(ctx, x, nullptr, nullptr, weight, eps, y, rstd));
}

void add_rmsnorm_forward(Context& ctx, Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& y,
                         Tensor& rstd) {
  const OpCheck chk("add_rmsnorm_forward", ctx,
                    {{"residual", &residual}, {"x", &x}, {"weight", &weight}, {"y", &y}, {"rstd", &rstd}});
  check_forward(chk, residual, weight, eps, y, rstd);
  chk.shape(x, "x", residual.shape());
  chk.same_dtype(x, "x", residual, "residual");
  chk.require(!y.overlaps(residual) && !y.overlaps(x), "y aliases an input");
  ONN_DISPATCH(chk, rmsnorm_forward_cpu(residual, &x, &residual, weight, eps, y, rstd),
               rmsnorm_forward_cuda(ctx, residual, &x, &residual, weight, eps, y, rstd));
}

void rmsnorm_backward(Context& ctx, const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor* dweight, bool accumulate_dx) {
  const OpCheck chk("rmsnorm_backward", ctx,
                    {{"x", &x}, {"weight", &weight}, {"rstd", &rstd}, {"dy", &dy}, {"dx", &dx}, {"dweight", dweight}});
  chk.require(x.rank() == 2, "x must be (N, C)");
  const int64_t n = x.dim(0), c = x.dim(1);
  chk.float_dtype(x, "x");
  chk.shape(weight, "weight", Shape{c});
  chk.same_dtype(x, "x", weight, "weight");
  chk.shape(rstd, "rstd", Shape{n});
  chk.dtype(rstd, "rstd", norm_stat_dtype(x.dtype()));
  chk.shape(dy, "dy", Shape{n, c});
  chk.same_dtype(x, "x", dy, "dy");
  chk.shape(dx, "dx", Shape{n, c});
  chk.same_dtype(x, "x", dx, "dx");
  if (dweight != nullptr) {
    chk.shape(*dweight, "dweight", Shape{c});
    chk.dtype(*dweight, "dweight", norm_stat_dtype(x.dtype()));
  }
  ONN_DISPATCH(chk, rmsnorm_backward_cpu(x, weight, rstd, dy, dx, dweight, accumulate_dx),
               rmsnorm_backward_cuda(ctx, x, weight, rstd, dy, dx, dweight, accumulate_dx));
}

}  // namespace onn
