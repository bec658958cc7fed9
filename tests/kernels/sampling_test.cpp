// Sampling helpers: argmax (ties, NaN), the temperature / top-k / top-p / min-p distribution
// against hand-computed values, draws, and argmax over rows.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/sampling.h"
#include "runtime/error.h"

using namespace onn;

TEST_CASE("argmax: first of ties, NaN never wins") {
  const std::vector<float> a{1, 3, 3, NAN, -1};
  CHECK(argmax(a) == 1);
  const std::vector<float> b{NAN, -5, NAN};
  CHECK(argmax(b) == 1);
  CHECK(argmax(std::span<const float>()) == -1);
}

TEST_CASE("sampling distribution: temperature, top-k, top-p, min-p") {
  const std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  auto pr = sampling_probs(logits, p);
  CHECK(pr[0] == doctest::Approx(0.5));
  CHECK(pr[3] == doctest::Approx(0.05));
  p.temperature = 0.5f;  // squares the odds: 0.25, 0.09, 0.0225, 0.0025 over 0.365
  pr = sampling_probs(logits, p);
  CHECK(pr[0] == doctest::Approx(0.25 / 0.365));
  CHECK(pr[2] == doctest::Approx(0.0225 / 0.365));
  p = {};
  p.top_k = 2;
  pr = sampling_probs(logits, p);
  CHECK(pr[0] == doctest::Approx(0.625));
  CHECK(pr[1] == doctest::Approx(0.375));
  CHECK(pr[2] == 0.0);
  p = {};
  p.top_p = 0.75f;  // 0.5 + 0.3 reaches 0.75
  pr = sampling_probs(logits, p);
  CHECK(pr[1] == doctest::Approx(0.375));
  CHECK(pr[2] == 0.0);
  p.top_p = 0.85f;  // needs the third token
  pr = sampling_probs(logits, p);
  CHECK(pr[2] == doctest::Approx(0.15 / 0.95));
  p = {};
  p.min_p = 0.35f;  // keeps p >= 0.175: tokens 0 and 1
  pr = sampling_probs(logits, p);
  CHECK(pr[1] == doctest::Approx(0.375));
  CHECK(pr[2] == 0.0);
  p = {};
  p.temperature = 0.0f;
  pr = sampling_probs(logits, p);
  CHECK(pr[0] == 1.0);
  p = {};
  p.top_p = 0.0f;
  CHECK_THROWS_WITH_AS(sampling_probs(logits, p), doctest::Contains("top_p must be in (0, 1]"), InvalidArgument);
}

TEST_CASE("sample_token follows the distribution's cumulative mass") {
  const std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  CHECK(sample_token(logits, p, 0.0) == 0);
  CHECK(sample_token(logits, p, 0.49) == 0);
  CHECK(sample_token(logits, p, 0.51) == 1);
  CHECK(sample_token(logits, p, 0.79) == 1);
  CHECK(sample_token(logits, p, 0.81) == 2);
  CHECK(sample_token(logits, p, 0.999999) == 2);
  p.temperature = 0.0f;
  CHECK(sample_token(logits, p, 0.9) == 0);
  CHECK_THROWS_AS(sample_token(logits, p, 1.0), InvalidArgument);
}

TEST_CASE("argmax_rows over a batch of logits") {
  Context ctx(Device::cpu());
  const Tensor l = Tensor::from_floats(Shape{3, 3}, {0, 2, 1, 5, 5, 0, -1, -2, -0.5f});
  Tensor out = Tensor::empty(Shape{3}, DType::i32);
  argmax_rows(ctx, l, out);
  CHECK(out.data_as<int32_t>()[0] == 1);
  CHECK(out.data_as<int32_t>()[1] == 0);
  CHECK(out.data_as<int32_t>()[2] == 2);
}
