// Elementwise ops on the CPU: casts (round to nearest even into BF16), add in place, scale,
// fill, and dropout (mask rate, scaling, the same mask for the same seed, a new one for
// another).
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "kernels/elementwise.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("cast between F32, F64 and BF16") {
  Context ctx(Device::cpu());
  const Tensor x = Tensor::from_floats(Shape{4}, {1.0f, 1.00390625f, -2.5f, 3.0e38f});
  Tensor b = Tensor::empty(Shape{4}, DType::bf16), back = Tensor::empty(Shape{2, 2}, DType::f32);
  cast(ctx, x, b);
  cast(ctx, b, back);
  const float* p = static_cast<const float*>(back.data());
  CHECK(p[0] == 1.0f);
  CHECK(p[1] == 1.0f);  // halfway between 1 and 1 + 2^-7: ties to even
  CHECK(p[2] == -2.5f);
  CHECK(std::isfinite(p[3]));
  Tensor d = Tensor::empty(Shape{4}, DType::f64);
  cast(ctx, x, d);
  CHECK(static_cast<double*>(d.data())[1] == 1.00390625);
  Tensor wrong = Tensor::empty(Shape{5}, DType::f32);
  CHECK_THROWS_WITH_AS(cast(ctx, x, wrong), doctest::Contains("same number of elements"), InvalidArgument);
}

TEST_CASE("add in place, scale, fill") {
  Context ctx(Device::cpu());
  Tensor a = Tensor::from_floats(Shape{3}, {1, 2, 3});
  const Tensor b = Tensor::from_floats(Shape{3}, {10, 20, 30});
  add(ctx, a, b, a);
  CHECK(a.data_as<float>()[2] == 33.0f);
  scale(ctx, a, 0.5f);
  CHECK(a.data_as<float>()[0] == 5.5f);
  fill(ctx, a, -1.25f);
  CHECK(a.data_as<float>()[1] == -1.25f);
  const Tensor c = Tensor::from_floats(Shape{1, 3}, {1, 2, 3});
  CHECK_THROWS_WITH_AS(add(ctx, a, c, a), doctest::Contains("shapes differ"), InvalidArgument);
}

TEST_CASE("dropout keeps about 1 - p, scales kept values, and is a function of the seed") {
  Context ctx(Device::cpu());
  std::mt19937 rng(16);
  const int64_t n = 20000;
  const Tensor x = random64(Shape{n}, rng);
  Tensor y = Tensor::empty(Shape{n}, DType::f64), y2 = Tensor::empty(Shape{n}, DType::f64),
         y3 = Tensor::empty(Shape{n}, DType::f64);
  dropout(ctx, x, 0.25f, 7, y);
  dropout(ctx, x, 0.25f, 7, y2);
  dropout(ctx, x, 0.25f, 8, y3);
  int64_t kept = 0, differ = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = static_cast<double*>(y.data())[i], xi = static_cast<double*>(x.data())[i];
    if (a != 0.0) {
      ++kept;
      CHECK(a == doctest::Approx(xi / 0.75).epsilon(1e-7));
    }
    CHECK(a == static_cast<double*>(y2.data())[i]);
    differ += (a != 0.0) != (static_cast<double*>(y3.data())[i] != 0.0);
  }
  CHECK(std::abs(static_cast<double>(kept) / n - 0.75) < 0.02);
  CHECK(differ > n / 10);
  CHECK_THROWS_WITH_AS(dropout(ctx, x, 1.0f, 7, y), doctest::Contains("p must be in [0, 1)"), InvalidArgument);
}
