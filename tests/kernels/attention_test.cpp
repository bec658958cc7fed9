// Attention on the CPU: causal GQA over packed sequences. The F64 reference: backward against
// finite differences for GQA ratios 1, 2, 4, 8 and sequences of length 1; no attention across a
// document boundary; the decode path against the full forward; argument errors. The F32
// flash-style tiles against the F64 reference: forward, backward and decode; decode over a BF16
// cache.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "runtime/error.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("attention backward matches finite differences for GQA ratios 1, 2, 4, 8 and packed sequences") {
  Context ctx(Device::cpu());
  std::mt19937 rng(8);
  struct Case {
    int64_t h, kvh, d;
    std::vector<int64_t> lens;
  };
  const Case cases[] = {{2, 2, 4, {5}}, {4, 2, 3, {1, 4, 2}}, {4, 1, 5, {3, 3}}, {8, 1, 2, {1}}, {8, 4, 4, {2, 1, 3}}};
  for (const Case& c : cases) {
    CAPTURE(c.h);
    CAPTURE(c.kvh);
    CAPTURE(c.d);
    const AttentionSeqs seqs = packed_seqs(ctx, c.lens);
    int64_t n = 0;
    for (int64_t l : c.lens) n += l;
    Tensor q = random64(Shape{n, c.h, c.d}, rng), k = random64(Shape{n, c.kvh, c.d}, rng),
           v = random64(Shape{n, c.kvh, c.d}, rng);
    const Tensor g = random64(Shape{n, c.h, c.d}, rng);
    Tensor out = Tensor::empty(q.shape(), DType::f64), lse = Tensor::empty(Shape{n, c.h}, DType::f64);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    const auto loss = [&] {
      attention_forward(ctx, q, k, v, seqs, scale, out, lse);
      return dot(out, g);
    };
    const auto nq = numeric_grad(q, loss), nk = numeric_grad(k, loss), nv = numeric_grad(v, loss);
    attention_forward(ctx, q, k, v, seqs, scale, out, lse);
    Tensor dq = Tensor::empty(q.shape(), DType::f64), dk = Tensor::empty(k.shape(), DType::f64),
           dv = Tensor::empty(v.shape(), DType::f64);
    attention_backward(ctx, q, k, v, out, lse, g, seqs, scale, dq, dk, dv);
    CHECK(rel_error(dq, nq) < 1e-7);
    CHECK(rel_error(dk, nk) < 1e-7);
    CHECK(rel_error(dv, nv) < 1e-7);
    // lse is the log of the softmax denominator: first token of each sequence sees only
    // itself, so lse = scale * q.k there.
    const double* pq = static_cast<const double*>(q.data());
    const double* pk = static_cast<const double*>(k.data());
    double s = 0;
    for (int64_t e = 0; e < c.d; ++e) s += pq[e] * pk[e];
    CHECK(static_cast<double*>(lse.data())[0] == doctest::Approx(scale * s).epsilon(1e-6));
  }
}

TEST_CASE("attention never looks across a document boundary or into the future") {
  Context ctx(Device::cpu());
  std::mt19937 rng(9);
  const AttentionSeqs seqs = packed_seqs(ctx, {3, 4});
  Tensor q = random64(Shape{7, 2, 8}, rng), k = random64(Shape{7, 1, 8}, rng), v = random64(Shape{7, 1, 8}, rng);
  Tensor o1 = Tensor::empty(q.shape(), DType::f64), o2 = Tensor::empty(q.shape(), DType::f64),
         lse = Tensor::empty(Shape{7, 2}, DType::f64);
  attention_forward(ctx, q, k, v, seqs, 0.3f, o1, lse);
  // Change the second document's and the last token's keys and values.
  for (int64_t i = 3 * 8; i < 7 * 8; ++i) static_cast<double*>(k.data())[i] += 1.0;
  for (int64_t i = 6 * 8; i < 7 * 8; ++i) static_cast<double*>(v.data())[i] -= 2.0;
  attention_forward(ctx, q, k, v, seqs, 0.3f, o2, lse);
  const double* a = static_cast<const double*>(o1.data());
  const double* b = static_cast<const double*>(o2.data());
  for (int64_t i = 0; i < 3 * 2 * 8; ++i) CHECK(a[i] == b[i]);  // document one untouched
  bool changed = false;
  for (int64_t i = 3 * 2 * 8; i < 7 * 2 * 8; ++i) changed |= a[i] != b[i];
  CHECK(changed);
  // Document two, token 3 (its first) attends only to itself: out = v[3].
  for (int64_t e = 0; e < 8; ++e) CHECK(b[(3 * 2 + 1) * 8 + e] == doctest::Approx(static_cast<double*>(v.data())[3 * 8 + e]));
}

TEST_CASE("attention_decode equals the last rows of the full causal forward") {
  Context ctx(Device::cpu());
  std::mt19937 rng(10);
  const int64_t b = 2, tmax = 9, h = 4, kvh = 2, d = 6, tq = 2;
  const int32_t lens[2] = {5, 9};
  Tensor kc = random64(Shape{b, tmax, kvh, d}, rng), vc = random64(Shape{b, tmax, kvh, d}, rng);
  Tensor q = random64(Shape{b, tq, h, d}, rng), out = Tensor::empty(q.shape(), DType::f64);
  Tensor lt = Tensor::empty(Shape{b}, DType::i32);
  std::memcpy(lt.data(), lens, sizeof lens);
  attention_decode(ctx, q, kc, vc, lt, 0.4f, out);
  for (int64_t bb = 0; bb < b; ++bb) {
    const int64_t len = lens[bb];
    // Full sequence: queries are random except the last tq, which are this q.
    Tensor fq = random64(Shape{len, h, d}, rng), fk = Tensor::empty(Shape{len, kvh, d}, DType::f64),
           fv = Tensor::empty(Shape{len, kvh, d}, DType::f64);
    std::memcpy(fk.data(), static_cast<double*>(kc.data()) + bb * tmax * kvh * d, len * kvh * d * 8);
    std::memcpy(fv.data(), static_cast<double*>(vc.data()) + bb * tmax * kvh * d, len * kvh * d * 8);
    std::memcpy(static_cast<double*>(fq.data()) + (len - tq) * h * d, static_cast<double*>(q.data()) + bb * tq * h * d,
                tq * h * d * 8);
    Tensor fo = Tensor::empty(fq.shape(), DType::f64), lse = Tensor::empty(Shape{len, h}, DType::f64);
    attention_forward(ctx, fq, fk, fv, uniform_seqs(ctx, 1, len), 0.4f, fo, lse);
    for (int64_t i = 0; i < tq * h * d; ++i)
      CHECK(static_cast<double*>(out.data())[bb * tq * h * d + i] ==
            doctest::Approx(static_cast<double*>(fo.data())[(len - tq) * h * d + i]).epsilon(1e-12));
  }
  lt.data_as<int32_t>()[0] = 1;  // fewer cached tokens than queries
  CHECK_THROWS_WITH_AS(attention_decode(ctx, q, kc, vc, lt, 0.4f, out), doctest::Contains("lens[0] = 1"),
                       InvalidArgument);
}

TEST_CASE("attention refuses bad GQA ratios, shapes and sequence offsets") {
  Context ctx(Device::cpu());
  const Tensor q = Tensor::zeros(Shape{4, 6, 8}, DType::f32), k = Tensor::zeros(Shape{4, 4, 8}, DType::f32);
  Tensor out = Tensor::empty(q.shape(), DType::f32), lse = Tensor::empty(Shape{4, 6}, DType::f32);
  CHECK_THROWS_WITH_AS(attention_forward(ctx, q, k, k, uniform_seqs(ctx, 1, 4), 1.0f, out, lse),
                       doctest::Contains("H = 6 must be a multiple of KVH = 4"), InvalidArgument);
  const Tensor k2 = Tensor::zeros(Shape{4, 2, 8}, DType::f32);
  CHECK_THROWS_WITH_AS(attention_forward(ctx, q, k2, k2, uniform_seqs(ctx, 1, 3), 1.0f, out, lse),
                       doctest::Contains("cu_seqlens ends at 3 but there are 4 tokens"), InvalidArgument);
}

namespace {

Tensor as_dtype(const Tensor& t, DType dtype) {
  Context ctx(Device::cpu());
  Tensor out = Tensor::empty(t.shape(), dtype);
  cast(ctx, t, out);
  return out;
}
// Random F32 values (so the F32 and F64 runs see the same inputs).
Tensor random32(const Shape& s, std::mt19937& rng, double spread) { return as_dtype(random64(s, rng, spread), DType::f32); }
Tensor as64(const Tensor& t) { return as_dtype(t, DType::f64); }

// The F32 run (the flash-style tiles) against the F64 reference.
void check_close(const Tensor& f32, const Tensor& f64, double tol) { CHECK(rel_error(as64(f32), f64) < tol); }

}  // namespace

TEST_CASE("the F32 tiled CPU attention matches the F64 reference: forward, backward, GQA, packed documents") {
  Context ctx(Device::cpu());
  std::mt19937 rng(31);
  struct Case {
    int64_t h, kvh, d;
    std::vector<int64_t> lens;
    double spread;  // input scale: large values make the running max move between key blocks
  };
  // Head dims with a compiled tile (16, 64, 80) and one without (7); sequences shorter than one
  // key block, across several, and of length 1; GQA ratios 1, 3, 4.
  const Case cases[] = {{4, 4, 16, {130}, 1.0},         {9, 3, 64, {1, 70, 33, 129}, 1.0},
                        {8, 2, 80, {65, 64}, 0.5},      {4, 1, 7, {200, 3}, 3.0},
                        {2, 2, 16, {97}, 4.0}};
  for (const Case& c : cases) {
    CAPTURE(c.h);
    CAPTURE(c.d);
    CAPTURE(c.spread);
    int64_t n = 0;
    for (int64_t l : c.lens) n += l;
    const AttentionSeqs seqs = packed_seqs(ctx, c.lens);
    const Tensor q = random32(Shape{n, c.h, c.d}, rng, c.spread), k = random32(Shape{n, c.kvh, c.d}, rng, c.spread),
                 v = random32(Shape{n, c.kvh, c.d}, rng, 1.0), g = random32(Shape{n, c.h, c.d}, rng, 1.0);
    const Tensor q64 = as64(q), k64 = as64(k), v64 = as64(v), g64 = as64(g);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    Tensor out = Tensor::empty(q.shape(), DType::f32), lse = Tensor::empty(Shape{n, c.h}, DType::f32);
    Tensor out64 = Tensor::empty(q.shape(), DType::f64), lse64 = Tensor::empty(Shape{n, c.h}, DType::f64);
    attention_forward(ctx, q, k, v, seqs, scale, out, lse);
    attention_forward(ctx, q64, k64, v64, seqs, scale, out64, lse64);
    check_close(out, out64, 2e-6);
    check_close(lse, lse64, 2e-6);
    Tensor dq = Tensor::empty(q.shape(), DType::f32), dk = Tensor::empty(k.shape(), DType::f32),
           dv = Tensor::empty(v.shape(), DType::f32);
    Tensor dq64 = Tensor::empty(q.shape(), DType::f64), dk64 = Tensor::empty(k.shape(), DType::f64),
           dv64 = Tensor::empty(v.shape(), DType::f64);
    attention_backward(ctx, q, k, v, out, lse, g, seqs, scale, dq, dk, dv);
    attention_backward(ctx, q64, k64, v64, out64, lse64, g64, seqs, scale, dq64, dk64, dv64);
    check_close(dq, dq64, 1e-5);
    check_close(dk, dk64, 1e-5);
    check_close(dv, dv64, 1e-5);
  }
}

TEST_CASE("the F32 tiled CPU decode matches the F64 reference, one query and several, ragged cache lengths") {
  Context ctx(Device::cpu());
  std::mt19937 rng(32);
  for (const int64_t tq : {int64_t{1}, int64_t{3}}) {
    CAPTURE(tq);
    const int64_t b = 3, tmax = 150, h = 6, kvh = 2, d = 32;
    const int32_t lens[3] = {3, 150, 66};
    const Tensor q = random32(Shape{b, tq, h, d}, rng, 2.0), kc = random32(Shape{b, tmax, kvh, d}, rng, 2.0),
                 vc = random32(Shape{b, tmax, kvh, d}, rng, 2.0);
    Tensor lt = Tensor::empty(Shape{b}, DType::i32);
    std::memcpy(lt.data(), lens, sizeof lens);
    Tensor out = Tensor::empty(q.shape(), DType::f32), out64 = Tensor::empty(q.shape(), DType::f64);
    attention_decode(ctx, q, kc, vc, lt, 0.3f, out);
    attention_decode(ctx, as64(q), as64(kc), as64(vc), lt, 0.3f, out64);
    check_close(out, out64, 2e-6);
  }
}

TEST_CASE("the CPU decode reads a BF16 cache as the F32 cache of the same values, bit for bit") {
  Context ctx(Device::cpu());
  std::mt19937 rng(33);
  const int64_t b = 2, tmax = 90, h = 4, kvh = 2, d = 64;
  const Tensor q = random32(Shape{b, 1, h, d}, rng, 1.0);
  const Tensor kc16 = as_dtype(random64(Shape{b, tmax, kvh, d}, rng), DType::bf16),
               vc16 = as_dtype(random64(Shape{b, tmax, kvh, d}, rng), DType::bf16);
  const Tensor kc32 = as_dtype(kc16, DType::f32), vc32 = as_dtype(vc16, DType::f32);
  Tensor lt = i32_tensor({90, 37});
  Tensor out16 = Tensor::empty(q.shape(), DType::f32), out32 = Tensor::empty(q.shape(), DType::f32);
  attention_decode(ctx, q, kc16, vc16, lt, 0.125f, out16);
  attention_decode(ctx, q, kc32, vc32, lt, 0.125f, out32);
  CHECK(std::memcmp(out16.data(), out32.data(), out16.nbytes()) == 0);
  // Keys and values must share a dtype.
  CHECK_THROWS_WITH_AS(attention_decode(ctx, q, kc16, vc32, lt, 0.125f, out16), doctest::Contains("v_cache"),
                       InvalidArgument);
}
