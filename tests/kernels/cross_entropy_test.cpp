// Cross-entropy on the CPU (F64): loss against the formula with ignored tokens, the in-place
// gradient against finite differences of the mean loss, F32 against F64, and the chunked LM
// head against the unchunked computation (loss, dh, dw) for several chunk sizes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cross_entropy.h"
#include "kernels/linear.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

namespace {

double mean_ce(Context& ctx, const Tensor& logits, const Tensor& labels) {
  Tensor work = clone(logits);
  Tensor valid = Tensor::empty(Shape{1}, DType::f64), tl = Tensor::empty(Shape{labels.dim(0)}, DType::f64),
         loss = Tensor::empty(Shape{1}, DType::f64);
  count_valid_labels(ctx, labels, kIgnoreIndex, valid);
  CrossEntropyOptions o;
  o.compute_grad = false;
  cross_entropy_forward_backward(ctx, work, labels, valid, tl, o);
  mean_loss(ctx, tl, valid, loss);
  return static_cast<double*>(loss.data())[0];
}
}  // namespace

TEST_CASE("cross-entropy: loss formula, ignored tokens, gradient in place against finite differences") {
  Context ctx(Device::cpu());
  std::mt19937 rng(13);
  for (int64_t v : {1, 7, 33}) {
    CAPTURE(v);
    const Tensor labels = v == 1 ? i32_tensor({0, -100, 0}) : i32_tensor({3, -100, 0, 6});
    const int64_t n = labels.dim(0);
    Tensor logits = random64(Shape{n, v}, rng, 4.0);
    const double loss = mean_ce(ctx, logits, labels);
    double want = 0;
    int valid = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t l = static_cast<int32_t*>(labels.data())[i];
      if (l == kIgnoreIndex) continue;
      double s = 0;
      for (int64_t j = 0; j < v; ++j) s += std::exp(static_cast<double*>(logits.data())[i * v + j]);
      want += std::log(s) - static_cast<double*>(logits.data())[i * v + l];
      ++valid;
    }
    CHECK(loss == doctest::Approx(want / valid).epsilon(1e-12));
    const auto num = numeric_grad(logits, [&] { return mean_ce(ctx, logits, labels); });
    Tensor grad = clone(logits);
    Tensor valid_t = Tensor::empty(Shape{1}, DType::f64), tl = Tensor::empty(Shape{n}, DType::f64);
    count_valid_labels(ctx, labels, kIgnoreIndex, valid_t);
    cross_entropy_forward_backward(ctx, grad, labels, valid_t, tl);
    CHECK(rel_error(grad, num) < 1e-8);
    for (int64_t j = 0; j < v; ++j) CHECK(static_cast<double*>(grad.data())[1 * v + j] == 0.0);  // ignored row
  }
  Tensor logits = random64(Shape{2, 4}, rng);
  CHECK_THROWS_WITH_AS(mean_ce(ctx, logits, i32_tensor({1, 4})), doctest::Contains("labels[1] = 4 is outside [0, 4)"),
                       InvalidArgument);
  // Every label ignored: the loss is 0, not NaN.
  CHECK(mean_ce(ctx, logits, i32_tensor({-100, -100})) == 0.0);
}

TEST_CASE("cross-entropy in F32 (vectorised exponentials) matches the F64 path: loss and gradient, wide rows, "
          "ignored tokens") {
  Context ctx(Device::cpu());
  std::mt19937 rng(5);
  for (int64_t v : {5, 33, 1000}) {  // under, past and far past the lane count
    CAPTURE(v);
    const Tensor labels = i32_tensor({0, -100, static_cast<int32_t>(v - 1), static_cast<int32_t>(v / 2)});
    const int64_t n = labels.dim(0);
    const Tensor logits64 = random64(Shape{n, v}, rng, 8.0);  // exponents spread over ~e^20
    std::vector<std::vector<double>> loss, grad;
    for (DType t : {DType::f64, DType::f32}) {
      Tensor work = logits64.to_dtype(t).to_dtype(DType::f64).to_dtype(t);
      Tensor valid = Tensor::empty(Shape{1}, t), tl = Tensor::empty(Shape{n}, t);
      count_valid_labels(ctx, labels, kIgnoreIndex, valid);
      cross_entropy_forward_backward(ctx, work, labels, valid, tl);
      const Tensor w = work.to_dtype(DType::f64), l = tl.to_dtype(DType::f64);
      grad.emplace_back(w.data_as<double>(), w.data_as<double>() + w.numel());
      loss.emplace_back(l.data_as<double>(), l.data_as<double>() + l.numel());
    }
    // The F64 path ran on the F32-rounded logits: the difference is the F32 path's own error.
    for (int64_t i = 0; i < n; ++i)
      CHECK(std::abs(loss[1][i] - loss[0][i]) <= 1e-6 * std::max(1.0, std::abs(loss[0][i])));
    double worst = 0;
    for (size_t j = 0; j < grad[0].size(); ++j) worst = std::max(worst, std::abs(grad[1][j] - grad[0][j]));
    CHECK(worst < 1e-7);  // measured 1e-8 to 2e-8
    for (int64_t j = 0; j < v; ++j) CHECK(grad[1][static_cast<size_t>(v + j)] == 0.0);  // ignored row
  }
}

TEST_CASE("lm_head_cross_entropy in chunks equals the whole computation, dh and dw by finite differences") {
  Context ctx(Device::cpu());
  std::mt19937 rng(14);
  const int64_t n = 7, c = 5, v = 9;
  Tensor h = random64(Shape{n, c}, rng), w = random64(Shape{v, c}, rng);
  const Tensor labels = i32_tensor({1, 8, -100, 0, 4, -100, 2});
  Tensor loss = Tensor::empty(Shape{1}, DType::f64);
  // Whole: logits = h W^T, then mean CE.
  Tensor logits = Tensor::empty(Shape{n, v}, DType::f64);
  linear_forward(ctx, h, w, nullptr, logits);
  const double whole = mean_ce(ctx, logits, labels);
  const auto nh = numeric_grad(h, [&] {
    lm_head_cross_entropy(ctx, h, w, labels, loss, nullptr, nullptr);
    return static_cast<double*>(loss.data())[0];
  });
  const auto nw = numeric_grad(w, [&] {
    lm_head_cross_entropy(ctx, h, w, labels, loss, nullptr, nullptr);
    return static_cast<double*>(loss.data())[0];
  });
  for (int64_t chunk : {1, 3, 7, 100}) {
    CAPTURE(chunk);
    LmHeadLossOptions o;
    o.chunk_tokens = chunk;
    Tensor dh = Tensor::empty(h.shape(), DType::f64), dw = Tensor::empty(w.shape(), DType::f64);
    lm_head_cross_entropy(ctx, h, w, labels, loss, &dh, &dw, o);
    CHECK(static_cast<double*>(loss.data())[0] == doctest::Approx(whole).epsilon(1e-12));
    CHECK(rel_error(dh, nh) < 1e-8);
    CHECK(rel_error(dw, nw) < 1e-8);
    o.accumulate_dw = true;
    lm_head_cross_entropy(ctx, h, w, labels, loss, nullptr, &dw, o);
    for (size_t i = 0; i < nw.size(); ++i) CHECK(static_cast<double*>(dw.data())[i] == doctest::Approx(2 * nw[i]));
  }
}

namespace {
// Runs SlicedLmHeadLoss over w cut at `cuts` (ascending row starts after 0): loss and dh.
std::pair<double, Tensor> sliced_loss(Context& ctx, const Tensor& h, const Tensor& w, const Tensor& labels,
                                      const std::vector<int64_t>& cuts, int64_t chunk, int64_t granule) {
  const int64_t v = w.dim(0);
  std::vector<int64_t> bounds{0};
  for (int64_t c : cuts) bounds.push_back(c);
  bounds.push_back(v);
  SlicedLmHeadLoss s(ctx, h, labels, v, nullptr, chunk, granule);
  for (size_t i = 0; i + 1 < bounds.size(); ++i) s.forward_slice(bounds[i], w.slice(bounds[i], bounds[i + 1]));
  Tensor loss = Tensor::empty(Shape{1}, loss_dtype(h.dtype()));
  s.finish(loss);
  Tensor dh = Tensor::empty(h.shape(), h.dtype());
  dh.fill_bytes(0xff);  // the first backward slice must write every element
  for (size_t i = bounds.size() - 1; i-- > 0;) s.backward_slice(bounds[i], w.slice(bounds[i], bounds[i + 1]), dh);
  return {load_as_double(loss.data(), loss.dtype(), 0), dh};
}
}  // namespace

TEST_CASE("SlicedLmHeadLoss: equals the fused LM head loss, and has the same bits wherever the slices are cut") {
  Context ctx(Device::cpu());
  std::mt19937 rng(31);
  const int64_t n = 11, c = 6, v = 50;
  const Tensor labels = i32_tensor({3, -100, 49, 0, 17, 16, -100, 32, 31, 48, 5});
  for (DType t : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(t));
    const Tensor h = random64(Shape{n, c}, rng, 2.0).to_dtype(t), w = random64(Shape{v, c}, rng, 2.0).to_dtype(t);
    Tensor ref_loss = Tensor::empty(Shape{1}, loss_dtype(t)), ref_dh = Tensor::empty(h.shape(), t);
    lm_head_cross_entropy(ctx, h, w, labels, ref_loss, &ref_dh, nullptr);
    const double want = load_as_double(ref_loss.data(), ref_loss.dtype(), 0);
    const double tol = t == DType::f64 ? 1e-12 : 1e-5;
    const auto [loss, dh] = sliced_loss(ctx, h, w, labels, {}, 4, 16);
    CHECK(loss == doctest::Approx(want).epsilon(tol));
    CHECK(rel_error(dh.to_dtype(DType::f64), ref_dh.to_dtype(DType::f64)) < tol);
    // Other cuts on granule boundaries and other token chunks give the same bits.
    for (const std::vector<int64_t>& cuts : {std::vector<int64_t>{16}, {32}, {16, 32, 48}}) {
      CAPTURE(cuts.size());
      const auto [l2, dh2] = sliced_loss(ctx, h, w, labels, cuts, 4, 16);
      CHECK(l2 == loss);
      CHECK(std::memcmp(dh2.data(), dh.data(), dh.nbytes()) == 0);
    }
  }
}

TEST_CASE("SlicedLmHeadLoss refuses out-of-order or misaligned slices and labels outside the vocabulary") {
  Context ctx(Device::cpu());
  std::mt19937 rng(32);
  const Tensor h = random64(Shape{3, 4}, rng), w = random64(Shape{40, 4}, rng);
  const Tensor labels = i32_tensor({1, 2, 3});
  SlicedLmHeadLoss s(ctx, h, labels, 40, nullptr, 2, 16);
  CHECK_THROWS_WITH_AS(s.forward_slice(16, w.slice(16, 32)), doctest::Contains("expected the slice starting at 0"),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(s.forward_slice(0, w.slice(0, 10)), doctest::Contains("multiple of the granule 16"),
                       InvalidArgument);
  s.forward_slice(0, w.slice(0, 32));
  Tensor loss = Tensor::empty(Shape{1}, DType::f64);
  CHECK_THROWS_WITH_AS(s.finish(loss), doctest::Contains("saw 32 of 40"), InvalidArgument);
  SlicedLmHeadLoss bad(ctx, h, i32_tensor({1, 45, 3}), 40, nullptr, 2, 16);
  bad.forward_slice(0, w);
  CHECK_THROWS_WITH_AS(bad.finish(loss), doctest::Contains("labels[1] = 45 is outside the vocabulary"),
                       InvalidArgument);
}
