// AdamW on the CPU against torch.optim.AdamW's update written out step by step (bias
// correction, decoupled weight decay, gradient scaling), the compute copy, the global
// gradient norm and the clipping factor.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "kernels/adamw.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("adamw matches the written-out torch.optim.AdamW update over several steps") {
  Context ctx(Device::cpu());
  std::mt19937 rng(15);
  const int64_t n = 37;
  Tensor p = random64(Shape{n}, rng), m = Tensor::zeros(Shape{n}, DType::f64), v = Tensor::zeros(Shape{n}, DType::f64);
  std::vector<double> rp(static_cast<size_t>(n)), rm(static_cast<size_t>(n), 0.0), rv(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) rp[static_cast<size_t>(i)] = static_cast<double*>(p.data())[i];
  AdamWConfig cfg;
  cfg.lr = 0.01f;
  cfg.beta1 = 0.8f;
  cfg.beta2 = 0.95f;
  cfg.eps = 1e-6f;
  cfg.weight_decay = 0.1f;
  cfg.grad_scale = 0.5f;
  Tensor copy = Tensor::empty(Shape{n}, DType::bf16);
  for (int64_t step = 1; step <= 4; ++step) {
    const Tensor g = random64(Shape{n}, rng);
    cfg.step = step;
    adamw_step(ctx, p, g, m, v, cfg, &copy);
    const double b1 = cfg.beta1, b2 = cfg.beta2, lr = cfg.lr;
    for (size_t i = 0; i < rp.size(); ++i) {
      const double gi = static_cast<const double*>(g.data())[i] * cfg.grad_scale;
      rp[i] *= 1 - lr * cfg.weight_decay;
      rm[i] = b1 * rm[i] + (1 - b1) * gi;
      rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
      const double bc1 = 1 - std::pow(b1, static_cast<double>(step)), bc2 = 1 - std::pow(b2, static_cast<double>(step));
      rp[i] -= lr / bc1 * rm[i] / (std::sqrt(rv[i]) / std::sqrt(bc2) + cfg.eps);
    }
  }
  CHECK(rel_error(p, rp) < 1e-12);
  CHECK(rel_error(m, rm) < 1e-12);
  CHECK(rel_error(v, rv) < 1e-12);
  CHECK(rel_error(copy, rp) < 4e-3);  // bf16 rounding of the new parameters
  Tensor bad = Tensor::zeros(Shape{n + 1}, DType::f64);
  CHECK_THROWS_WITH_AS(adamw_step(ctx, p, bad, m, v, cfg), doctest::Contains("same number of elements"),
                       InvalidArgument);
  cfg.step = 0;
  CHECK_THROWS_WITH_AS(adamw_step(ctx, p, m, m, v, cfg), doctest::Contains("step must be >= 1"), InvalidArgument);
}

TEST_CASE("global gradient norm over several tensors, and the clipping factor") {
  Context ctx(Device::cpu());
  const Tensor a = Tensor::from_floats(Shape{2}, {3.0f, 4.0f});
  const Tensor b = Tensor::from_floats(Shape{1, 1}, {12.0f});
  const Tensor c = Tensor::from_floats(Shape{2}, {3.0f, 4.0f}).to_dtype(DType::bf16);
  CHECK(global_grad_norm(ctx, {&a, &b}) == doctest::Approx(13.0));
  CHECK(global_grad_norm(ctx, {&a, &b, &c}) == doctest::Approx(std::sqrt(169.0 + 25.0)));
  CHECK(global_grad_norm(ctx, {}) == 0.0);
  CHECK(clip_scale(13.0, 1.0) == doctest::Approx(1.0 / 13.0).epsilon(1e-6));
  CHECK(clip_scale(0.5, 1.0) == 1.0);
  CHECK(clip_scale(13.0, 0.0) == 1.0);
}
