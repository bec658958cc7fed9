// RMSNorm and the fused add + RMSNorm on the CPU (F64): forward against the formula, backward
// (dx, dweight, accumulation) against central finite differences; argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "kernels/rmsnorm.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("rmsnorm forward matches the formula and backward matches finite differences") {
  Context ctx(Device::cpu());
  std::mt19937 rng(1);
  for (int64_t c : {1, 7, 33, 64, 132}) {
    for (int64_t n : {1, 3}) {
      for (float eps : {1e-5f, 1e-2f}) {
        CAPTURE(c);
        CAPTURE(n);
        CAPTURE(eps);
        Tensor x = random64(Shape{n, c}, rng), w = random64(Shape{c}, rng);
        const Tensor g = random64(Shape{n, c}, rng);
        Tensor y = Tensor::empty(Shape{n, c}, DType::f64), rstd = Tensor::empty(Shape{n}, DType::f64);
        rmsnorm_forward(ctx, x, w, eps, y, rstd);
        const double* px = static_cast<const double*>(x.data());
        for (int64_t i = 0; i < n; ++i) {
          double ss = 0;
          for (int64_t j = 0; j < c; ++j) ss += px[i * c + j] * px[i * c + j];
          const double r = 1 / std::sqrt(ss / c + eps);
          CHECK(static_cast<double*>(rstd.data())[i] == doctest::Approx(r).epsilon(1e-12));
          for (int64_t j = 0; j < c; ++j)
            CHECK(static_cast<double*>(y.data())[i * c + j] ==
                  doctest::Approx(static_cast<double*>(w.data())[j] * px[i * c + j] * r).epsilon(1e-12));
        }
        const auto loss = [&] {
          rmsnorm_forward(ctx, x, w, eps, y, rstd);
          return dot(y, g);
        };
        const std::vector<double> nx = numeric_grad(x, loss), nw = numeric_grad(w, loss);
        rmsnorm_forward(ctx, x, w, eps, y, rstd);
        Tensor dx = Tensor::empty(x.shape(), DType::f64), dw = Tensor::empty(w.shape(), DType::f64);
        rmsnorm_backward(ctx, x, w, rstd, g, dx, &dw);
        // C = 1 makes dx tiny (eps / (x^2 + eps)^1.5), so allow for the differences' noise.
        CHECK(rel_error(dx, nx) < 1e-6);
        CHECK(rel_error(dw, nw) < 1e-7);
        // accumulate_dx adds onto what is there.
        Tensor acc = random64(x.shape(), rng);
        const Tensor before = clone(acc);
        rmsnorm_backward(ctx, x, w, rstd, g, acc, nullptr, true);
        for (int64_t i = 0; i < acc.numel(); ++i)
          CHECK(static_cast<double*>(acc.data())[i] ==
                doctest::Approx(static_cast<double*>(before.data())[i] + static_cast<double*>(dx.data())[i])
                    .epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("add_rmsnorm updates the residual and normalises it, its backward is the accumulated norm gradient") {
  Context ctx(Device::cpu());
  std::mt19937 rng(2);
  const int64_t n = 3, c = 37;
  const Tensor res0 = random64(Shape{n, c}, rng);
  Tensor x = random64(Shape{n, c}, rng), w = random64(Shape{c}, rng);
  const Tensor gy = random64(Shape{n, c}, rng), gres = random64(Shape{n, c}, rng);
  Tensor res = clone(res0), y = Tensor::empty(Shape{n, c}, DType::f64), rstd = Tensor::empty(Shape{n}, DType::f64);
  add_rmsnorm_forward(ctx, res, x, w, 1e-5f, y, rstd);
  Tensor sum = Tensor::empty(Shape{n, c}, DType::f64), y2 = Tensor::empty(Shape{n, c}, DType::f64),
         r2 = Tensor::empty(Shape{n}, DType::f64);
  for (int64_t i = 0; i < n * c; ++i)
    static_cast<double*>(sum.data())[i] = static_cast<double*>(res0.data())[i] + static_cast<double*>(x.data())[i];
  rmsnorm_forward(ctx, sum, w, 1e-5f, y2, r2);
  CHECK(rel_error(res, sum) == 0.0);
  CHECK(rel_error(y, y2) == 0.0);
  // Loss = <y, gy> + <new residual, gres>; d/dx through both paths.
  const auto loss = [&] {
    Tensor r = clone(res0);
    add_rmsnorm_forward(ctx, r, x, w, 1e-5f, y, rstd);
    return dot(y, gy) + dot(r, gres);
  };
  const std::vector<double> nx = numeric_grad(x, loss);
  Tensor dstream = clone(gres);
  rmsnorm_backward(ctx, res, w, rstd, gy, dstream, nullptr, true);
  CHECK(rel_error(dstream, nx) < 1e-7);
}

TEST_CASE("rmsnorm refuses mismatched shapes and dtypes, naming the op and shapes") {
  Context ctx(Device::cpu());
  Tensor x = Tensor::zeros(Shape{2, 8}, DType::f32), w = Tensor::zeros(Shape{7}, DType::f32);
  Tensor y = Tensor::empty(Shape{2, 8}, DType::f32), r = Tensor::empty(Shape{2}, DType::f32);
  CHECK_THROWS_WITH_AS(rmsnorm_forward(ctx, x, w, 1e-5f, y, r),
                       doctest::Contains("rmsnorm_forward(x=F32(2, 8)@cpu, weight=F32(7,)@cpu"), InvalidArgument);
  Tensor w8 = Tensor::zeros(Shape{8}, DType::f32), r64 = Tensor::empty(Shape{2}, DType::f64);
  CHECK_THROWS_WITH_AS(rmsnorm_forward(ctx, x, w8, 1e-5f, y, r64), doctest::Contains("rstd must be F32"),
                       InvalidArgument);
  Tensor xb = Tensor::zeros(Shape{2, 8}, DType::bf16);
  CHECK_THROWS_WITH_AS(rmsnorm_forward(ctx, xb, w8, 1e-5f, y, r), doctest::Contains("F32 or F64 on the CPU"),
                       InvalidArgument);
}
