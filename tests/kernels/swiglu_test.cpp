// SwiGLU on the CPU (F64): forward against the formula, backward against finite differences,
// the concatenated gate_up layout against the separate one; argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/swiglu.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("swiglu forward and backward, separate tensors") {
  Context ctx(Device::cpu());
  std::mt19937 rng(3);
  for (int64_t f : {1, 9, 33}) {
    for (int64_t n : {1, 4}) {
      CAPTURE(f);
      CAPTURE(n);
      Tensor gate = random64(Shape{n, f}, rng, 3.0), up = random64(Shape{n, f}, rng);
      const Tensor g = random64(Shape{n, f}, rng);
      Tensor out = Tensor::empty(Shape{n, f}, DType::f64);
      swiglu_forward(ctx, gate, up, out);
      for (int64_t i = 0; i < n * f; ++i) {
        const double gv = static_cast<double*>(gate.data())[i], uv = static_cast<double*>(up.data())[i];
        CHECK(static_cast<double*>(out.data())[i] == doctest::Approx(gv / (1 + std::exp(-gv)) * uv).epsilon(1e-12));
      }
      const auto loss = [&] {
        swiglu_forward(ctx, gate, up, out);
        return dot(out, g);
      };
      const auto ng = numeric_grad(gate, loss), nu = numeric_grad(up, loss);
      Tensor dg = Tensor::empty(gate.shape(), DType::f64), du = Tensor::empty(up.shape(), DType::f64);
      swiglu_backward(ctx, gate, up, g, dg, du);
      CHECK(rel_error(dg, ng) < 1e-8);
      CHECK(rel_error(du, nu) < 1e-8);
    }
  }
}

TEST_CASE("swiglu with the concatenated gate_up layout equals the separate layout") {
  Context ctx(Device::cpu());
  std::mt19937 rng(4);
  const int64_t n = 5, f = 11;
  Tensor gate_up = random64(Shape{n, 2 * f}, rng, 3.0);
  Tensor gate = Tensor::empty(Shape{n, f}, DType::f64), up = Tensor::empty(Shape{n, f}, DType::f64);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(static_cast<double*>(gate.data()) + i * f, static_cast<double*>(gate_up.data()) + i * 2 * f, f * 8);
    std::memcpy(static_cast<double*>(up.data()) + i * f, static_cast<double*>(gate_up.data()) + i * 2 * f + f, f * 8);
  }
  const Tensor g = random64(Shape{n, f}, rng);
  Tensor o1 = Tensor::empty(Shape{n, f}, DType::f64), o2 = Tensor::empty(Shape{n, f}, DType::f64);
  swiglu_forward(ctx, gate, up, o1);
  swiglu_forward(ctx, gate_up, o2);
  CHECK(rel_error(o2, o1) == 0.0);
  const auto loss = [&] {
    swiglu_forward(ctx, gate_up, o2);
    return dot(o2, g);
  };
  const auto num = numeric_grad(gate_up, loss);
  Tensor dgu = Tensor::empty(gate_up.shape(), DType::f64);
  swiglu_backward(ctx, gate_up, g, dgu);
  CHECK(rel_error(dgu, num) < 1e-8);
}

TEST_CASE("swiglu refuses mismatched shapes") {
  Context ctx(Device::cpu());
  Tensor a = Tensor::zeros(Shape{2, 4}, DType::f32), b = Tensor::zeros(Shape{2, 5}, DType::f32);
  Tensor o = Tensor::empty(Shape{2, 4}, DType::f32);
  CHECK_THROWS_WITH_AS(swiglu_forward(ctx, a, b, o), doctest::Contains("swiglu_forward(gate=F32(2, 4)@cpu, up=F32(2, 5)"),
                       InvalidArgument);
  Tensor odd = Tensor::zeros(Shape{2, 5}, DType::f32);
  CHECK_THROWS_WITH_AS(swiglu_forward(ctx, odd, o), doctest::Contains("gate_up must be (N, 2F)"), InvalidArgument);
}
