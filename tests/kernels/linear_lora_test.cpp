// Linear and LoRA on the CPU (F64): forwards against the formula, backwards (dx, dw, dbias,
// dA, dB) against finite differences, with and without LoRA dropout; accumulation; errors.
#include <doctest/doctest.h>

#include <random>

#include "kernels/linear.h"
#include "kernels/counter_rng.h"
#include "kernels/lora.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("linear forward and backward (dx, dw, dbias) against finite differences") {
  Context ctx(Device::cpu());
  std::mt19937 rng(11);
  for (auto [n, in, out] : {std::tuple<int64_t, int64_t, int64_t>{1, 3, 2}, {5, 9, 7}, {4, 33, 8}}) {
    CAPTURE(n);
    CAPTURE(in);
    CAPTURE(out);
    Tensor x = random64(Shape{n, in}, rng), w = random64(Shape{out, in}, rng), b = random64(Shape{out}, rng);
    const Tensor g = random64(Shape{n, out}, rng);
    Tensor y = Tensor::empty(Shape{n, out}, DType::f64);
    linear_forward(ctx, x, w, &b, y);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double s = static_cast<double*>(b.data())[o];
        for (int64_t e = 0; e < in; ++e)
          s += static_cast<double*>(x.data())[i * in + e] * static_cast<double*>(w.data())[o * in + e];
        CHECK(static_cast<double*>(y.data())[i * out + o] == doctest::Approx(s).epsilon(1e-12));
      }
    const auto loss = [&] {
      linear_forward(ctx, x, w, &b, y);
      return dot(y, g);
    };
    const auto nx = numeric_grad(x, loss), nw = numeric_grad(w, loss), nb = numeric_grad(b, loss);
    Tensor dx = Tensor::empty(x.shape(), DType::f64), dw = Tensor::empty(w.shape(), DType::f64),
           db = Tensor::empty(b.shape(), DType::f64);
    LinearGrads lg;
    lg.dx = &dx;
    lg.dw = &dw;
    lg.dbias = &db;
    linear_backward(ctx, x, w, g, lg);
    CHECK(rel_error(dx, nx) < 1e-8);
    CHECK(rel_error(dw, nw) < 1e-8);
    CHECK(rel_error(db, nb) < 1e-8);
    lg.accumulate_dx = lg.accumulate_dw = true;
    linear_backward(ctx, x, w, g, lg);
    for (size_t i = 0; i < nw.size(); ++i) CHECK(static_cast<double*>(dw.data())[i] == doctest::Approx(2 * nw[i]));
    for (size_t i = 0; i < nb.size(); ++i) CHECK(static_cast<double*>(db.data())[i] == doctest::Approx(2 * nb[i]));
    for (size_t i = 0; i < nx.size(); ++i) CHECK(static_cast<double*>(dx.data())[i] == doctest::Approx(2 * nx[i]));
  }
}

TEST_CASE("lora forward is x W^T + b + scale * (drop(x) A^T) B^T, backward matches finite differences") {
  Context ctx(Device::cpu());
  std::mt19937 rng(12);
  for (float p : {0.0f, 0.3f}) {
    CAPTURE(p);
    const int64_t n = 6, in = 11, out = 7, r = 3;
    Tensor x = random64(Shape{n, in}, rng), w = random64(Shape{out, in}, rng), bias = random64(Shape{out}, rng);
    Tensor a = random64(Shape{r, in}, rng), b = random64(Shape{out, r}, rng);
    const Tensor g = random64(Shape{n, out}, rng);
    LoraConfig cfg;
    cfg.scale = 16.0f / 3.0f;
    cfg.dropout = p;
    cfg.seed = 99;
    Tensor y = Tensor::empty(Shape{n, out}, DType::f64), xa = Tensor::empty(Shape{n, r}, DType::f64);
    lora_forward(ctx, x, w, &bias, a, b, cfg, y, xa);
    // The formula, with the mask the op uses (seeded, so a second call agrees).
    int dropped = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double base = static_cast<double*>(bias.data())[o], lora = 0;
        for (int64_t e = 0; e < in; ++e)
          base += static_cast<double*>(x.data())[i * in + e] * static_cast<double*>(w.data())[o * in + e];
        for (int64_t k = 0; k < r; ++k) {
          double xak = 0;
          for (int64_t e = 0; e < in; ++e) {
            const bool keep = p == 0.0f || counter_uniform(cfg.seed, static_cast<uint64_t>(i * in + e)) >= p;
            if (!keep && o == 0 && k == 0) ++dropped;
            xak += keep ? static_cast<double*>(x.data())[i * in + e] * static_cast<double*>(a.data())[k * in + e] /
                              (1.0 - static_cast<double>(p))
                        : 0.0;
          }
          lora += xak * static_cast<double*>(b.data())[o * r + k];
        }
        CHECK(static_cast<double*>(y.data())[i * out + o] ==
              doctest::Approx(base + static_cast<double>(cfg.scale) * lora).epsilon(1e-10));
      }
    if (p > 0.0f) CHECK(dropped > 0);
    const auto loss = [&] {
      lora_forward(ctx, x, w, &bias, a, b, cfg, y, xa);
      return dot(y, g);
    };
    const auto nx = numeric_grad(x, loss), na = numeric_grad(a, loss), nb = numeric_grad(b, loss);
    lora_forward(ctx, x, w, &bias, a, b, cfg, y, xa);
    Tensor dx = Tensor::empty(x.shape(), DType::f64), da = Tensor::empty(a.shape(), DType::f64),
           db = Tensor::empty(b.shape(), DType::f64);
    LoraGrads lg;
    lg.dx = &dx;
    lg.da = &da;
    lg.db = &db;
    lora_backward(ctx, x, w, a, b, xa, g, cfg, lg);
    CHECK(rel_error(dx, nx) < 1e-8);
    CHECK(rel_error(da, na) < 1e-8);
    CHECK(rel_error(db, nb) < 1e-8);
  }
}

TEST_CASE("lora refuses mismatched adapter shapes") {
  Context ctx(Device::cpu());
  const Tensor x = Tensor::zeros(Shape{2, 8}, DType::f32), w = Tensor::zeros(Shape{4, 8}, DType::f32);
  const Tensor a = Tensor::zeros(Shape{2, 8}, DType::f32), b = Tensor::zeros(Shape{4, 3}, DType::f32);
  Tensor y = Tensor::empty(Shape{2, 4}, DType::f32), xa = Tensor::empty(Shape{2, 2}, DType::f32);
  CHECK_THROWS_WITH_AS(lora_forward(ctx, x, w, nullptr, a, b, {}, y, xa), doctest::Contains("b must be (4, 2)"),
                       InvalidArgument);
}
