// RoPE on the CPU (F64): forward against rotate_half written out, with per-token positions
// and partial rotary dims; backward against finite differences; frequency tables; errors.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "kernels/rope.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("rope forward is HF's q * cos + rotate_half(q) * sin, with partial rotary dims") {
  Context ctx(Device::cpu());
  std::mt19937 rng(5);
  for (double partial : {1.0, 0.5, 0.75}) {
    CAPTURE(partial);
    RopeConfig cfg;
    cfg.head_dim = 16;
    cfg.theta = 10000;
    cfg.partial_rotary_factor = partial;
    const int64_t r = rope_rotary_dims(cfg);
    CHECK(r == static_cast<int64_t>(16 * partial));
    const Tensor inv = rope_inv_freq_tensor(ctx, cfg, DType::f64);
    const Tensor pos = i32_tensor({0, 1, 7, 0, 3});  // a second document restarts at 0
    const Tensor x0 = random64(Shape{5, 3, 16}, rng);
    Tensor x = clone(x0);
    rope_forward(ctx, x, pos, inv);
    const double* a = static_cast<const double*>(x0.data());
    const double* b = static_cast<const double*>(x.data());
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t h = 0; h < 3; ++h)
        for (int64_t e = 0; e < 16; ++e) {
          const int64_t base = (i * 3 + h) * 16;
          double want = a[base + e];
          if (e < r) {
            const int64_t k = e % (r / 2);
            const double angle = static_cast<int32_t*>(pos.data())[i] / std::pow(10000.0, 2.0 * k / r);
            const double rot = e < r / 2 ? -a[base + e + r / 2] : a[base + e - r / 2];
            want = a[base + e] * std::cos(angle) + rot * std::sin(angle);
          }
          CHECK(b[base + e] == doctest::Approx(want).epsilon(1e-12));
        }
  }
}

TEST_CASE("rope backward is the transpose of the forward (finite differences)") {
  Context ctx(Device::cpu());
  std::mt19937 rng(6);
  RopeConfig cfg;
  cfg.head_dim = 10;
  cfg.partial_rotary_factor = 0.8;
  const Tensor inv = rope_inv_freq_tensor(ctx, cfg, DType::f64);
  const Tensor pos = i32_tensor({5, 0, 2});
  Tensor x = random64(Shape{3, 2, 10}, rng);
  const Tensor g = random64(Shape{3, 2, 10}, rng);
  const auto loss = [&] {
    Tensor y = clone(x);
    rope_forward(ctx, y, pos, inv);
    return dot(y, g);
  };
  const auto num = numeric_grad(x, loss);
  Tensor dx = clone(g);
  rope_backward(ctx, dx, pos, inv);
  CHECK(rel_error(dx, num) < 1e-8);
}

TEST_CASE("rope frequency tables: default, linear scaling, llama3 scaling") {
  RopeConfig cfg;
  cfg.head_dim = 128;
  cfg.theta = 500000;
  const auto base = rope_inv_freq(cfg);
  REQUIRE(base.size() == 64);
  CHECK(base[0] == 1.0);
  CHECK(base[1] == doctest::Approx(std::pow(500000.0, -2.0 / 128)).epsilon(1e-14));
  cfg.scaling.type = RopeScaling::Type::linear;
  cfg.scaling.factor = 4;
  const auto lin = rope_inv_freq(cfg);
  for (size_t i = 0; i < 64; ++i) CHECK(lin[i] == doctest::Approx(base[i] / 4).epsilon(1e-14));
  cfg.scaling = {RopeScaling::Type::llama3, 8.0, 1.0, 4.0, 8192};
  const auto l3 = rope_inv_freq(cfg);
  // Wavelengths below 8192 / 4 are kept, above 8192 / 1 are divided by the factor.
  for (size_t i = 0; i < 64; ++i) {
    const double wavelen = 2 * M_PI / base[i];
    if (wavelen < 2048) CHECK(l3[i] == base[i]);
    if (wavelen > 8192) CHECK(l3[i] == doctest::Approx(base[i] / 8).epsilon(1e-14));
    if (wavelen >= 2048 && wavelen <= 8192) {
      CHECK(l3[i] < base[i]);
      CHECK(l3[i] > base[i] / 8);
    }
  }
  cfg.partial_rotary_factor = 0.0;
  CHECK_THROWS_WITH_AS(rope_inv_freq(cfg), doctest::Contains("partial_rotary_factor"), InvalidArgument);
}

TEST_CASE("rope refuses bad shapes and dtypes") {
  Context ctx(Device::cpu());
  RopeConfig cfg;
  cfg.head_dim = 8;
  const Tensor inv = rope_inv_freq_tensor(ctx, cfg);
  Tensor x = Tensor::zeros(Shape{3, 2, 8}, DType::f32);
  const Tensor pos = i32_tensor({0, 1});
  CHECK_THROWS_WITH_AS(rope_forward(ctx, x, pos, inv), doctest::Contains("positions must be (3,), got (2,)"), InvalidArgument);
  Tensor x4 = Tensor::zeros(Shape{3, 2, 6}, DType::f32);
  const Tensor pos3 = i32_tensor({0, 1, 2});
  CHECK_THROWS_WITH_AS(rope_forward(ctx, x4, pos3, inv), doctest::Contains("R <= D"), InvalidArgument);
}
