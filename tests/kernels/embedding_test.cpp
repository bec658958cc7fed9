// Embedding on the CPU: lookup, the scatter-add backward against finite differences with
// repeated ids, accumulation, and out-of-range ids.
#include <doctest/doctest.h>

#include <random>

#include "kernels/embedding.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("embedding forward copies rows, backward scatter-adds (finite differences, repeated ids)") {
  Context ctx(Device::cpu());
  std::mt19937 rng(7);
  const int64_t v = 6, c = 5;
  Tensor w = random64(Shape{v, c}, rng);
  const Tensor ids = i32_tensor({3, 0, 3, 5, 3});
  Tensor out = Tensor::empty(Shape{5, c}, DType::f64);
  embedding_forward(ctx, w, ids, out);
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < c; ++j)
      CHECK(static_cast<double*>(out.data())[i * c + j] ==
            static_cast<double*>(w.data())[static_cast<int32_t*>(ids.data())[i] * c + j]);
  const Tensor g = random64(Shape{5, c}, rng);
  const auto num = numeric_grad(w, [&] {
    embedding_forward(ctx, w, ids, out);
    return dot(out, g);
  });
  Tensor dw = Tensor::zeros(Shape{v, c}, DType::f64);
  embedding_backward(ctx, ids, g, dw);
  CHECK(rel_error(dw, num) < 1e-9);
  embedding_backward(ctx, ids, g, dw);  // accumulates
  for (int64_t i = 0; i < v * c; ++i) CHECK(static_cast<double*>(dw.data())[i] == doctest::Approx(2 * num[i]));
}

TEST_CASE("embedding refuses ids outside the vocabulary and wrong dtypes") {
  Context ctx(Device::cpu());
  const Tensor w = Tensor::zeros(Shape{4, 2}, DType::f32);
  Tensor out = Tensor::empty(Shape{2, 2}, DType::f32);
  CHECK_THROWS_WITH_AS(embedding_forward(ctx, w, i32_tensor({1, 4}), out),
                       doctest::Contains("ids[1] = 4 is outside the vocabulary [0, 4)"), InvalidArgument);
  CHECK_THROWS_WITH_AS(embedding_forward(ctx, w, i32_tensor({-1, 0}), out), doctest::Contains("ids[0] = -1"),
                       InvalidArgument);
  const Tensor ids64 = Tensor::zeros(Shape{2}, DType::i64);
  CHECK_THROWS_WITH_AS(embedding_forward(ctx, w, ids64, out), doctest::Contains("ids must be I32"), InvalidArgument);
  Tensor dw = Tensor::zeros(Shape{4, 2}, DType::f64);
  const Tensor g = Tensor::zeros(Shape{2, 2}, DType::f32);
  CHECK_THROWS_WITH_AS(embedding_backward(ctx, i32_tensor({0, 1}), g, dw), doctest::Contains("dweight must be F32"),
                       InvalidArgument);
}
