// Attention on CUDA against the CPU F64 reference (label gpu): head dims 16, 32, 64, 80, 96, 128,
// GQA ratios 1, 2, 4, 8, packed sequences whose lengths straddle the tile sizes (1, 31, 33,
// 64, 100, 129), forward (out, lse) and backward (dq, dk, dv), the decode path, guards and
// bitwise determinism.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/attention.h"
#include "runtime/error.h"
#include "support/gpu_parity.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("attention CUDA forward and backward against the CPU reference") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(201);
  struct Case {
    int64_t h, kvh, d;
    std::vector<int64_t> lens;
  };
  const Case cases[] = {{2, 2, 64, {1}},          {4, 2, 64, {31, 33, 100}}, {8, 2, 80, {64, 1, 129}},
                        {8, 1, 96, {65, 7}},      {4, 4, 128, {200}},        {8, 8, 128, {17, 40}},
                        {16, 2, 128, {130, 3}}, {4, 2, 16, {70, 5}},   {6, 3, 32, {129}}};
  for (DType t : {DType::f32, DType::bf16}) {
    for (const Case& c : cases) {
      CAPTURE(dtype_name(t));
      CAPTURE(c.h);
      CAPTURE(c.kvh);
      CAPTURE(c.d);
      int64_t n = 0;
      for (int64_t l : c.lens) n += l;
      const AttentionSeqs dseqs = packed_seqs(ctx, c.lens), hseqs = packed_seqs(cpu, c.lens);
      const Input q = make_input(ctx, Shape{n, c.h, c.d}, t, rng), k = make_input(ctx, Shape{n, c.kvh, c.d}, t, rng);
      const Input v = make_input(ctx, Shape{n, c.kvh, c.d}, t, rng), g = make_input(ctx, Shape{n, c.h, c.d}, t, rng);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
      Guarded out(ctx, q.ref.shape(), t), lse(ctx, Shape{n, c.h}, DType::f32);
      attention_forward(ctx, q.dev, k.dev, v.dev, dseqs, scale, out.view, lse.view);
      Tensor oref = Tensor::empty(q.ref.shape(), DType::f64), lref = Tensor::empty(Shape{n, c.h}, DType::f64);
      attention_forward(cpu, q.ref, k.ref, v.ref, hseqs, scale, oref, lref);
      const double eo = parity_error(ctx, out.view, oref), el = parity_error(ctx, lse.view, lref);
      CAPTURE(eo);
      CAPTURE(el);
      CHECK(eo < parity_tolerance(t));
      CHECK(el < 1e-5);
      CHECK(out.guards_intact(ctx));
      CHECK(lse.guards_intact(ctx));
      // The backward takes the device's own out and lse, as training does; the reference
      // takes the reference's.
      Guarded dq(ctx, q.ref.shape(), t), dk(ctx, k.ref.shape(), t), dv(ctx, v.ref.shape(), t);
      attention_backward(ctx, q.dev, k.dev, v.dev, out.view, lse.view, g.dev, dseqs, scale, dq.view, dk.view, dv.view);
      Tensor dqr = Tensor::empty(q.ref.shape(), DType::f64), dkr = Tensor::empty(k.ref.shape(), DType::f64),
             dvr = Tensor::empty(v.ref.shape(), DType::f64);
      attention_backward(cpu, q.ref, k.ref, v.ref, oref, lref, g.ref, hseqs, scale, dqr, dkr, dvr);
      const double eq = parity_error(ctx, dq.view, dqr), ek = parity_error(ctx, dk.view, dkr),
                   ev = parity_error(ctx, dv.view, dvr);
      CAPTURE(eq);
      CAPTURE(ek);
      CAPTURE(ev);
      CHECK(eq < parity_tolerance(t));
      CHECK(ek < parity_tolerance(t));
      CHECK(ev < parity_tolerance(t));
      CHECK(dq.guards_intact(ctx));
      CHECK(dk.guards_intact(ctx));
      CHECK(dv.guards_intact(ctx));
      // Bitwise determinism of both directions.
      Tensor out2 = Tensor::empty(q.ref.shape(), t, ctx.device()), lse2 = Tensor::empty(Shape{n, c.h}, DType::f32, ctx.device());
      attention_forward(ctx, q.dev, k.dev, v.dev, dseqs, scale, out2, lse2);
      Tensor dq2 = Tensor::empty(q.ref.shape(), t, ctx.device()), dk2 = Tensor::empty(k.ref.shape(), t, ctx.device()),
             dv2 = Tensor::empty(v.ref.shape(), t, ctx.device());
      attention_backward(ctx, q.dev, k.dev, v.dev, out.view, lse.view, g.dev, dseqs, scale, dq2, dk2, dv2);
      CHECK(bitwise_equal(ctx, out.view, out2));
      CHECK(bitwise_equal(ctx, lse.view, lse2));
      CHECK(bitwise_equal(ctx, dq.view, dq2));
      CHECK(bitwise_equal(ctx, dk.view, dk2));
      CHECK(bitwise_equal(ctx, dv.view, dv2));
    }
  }
}

TEST_CASE("attention_decode CUDA against the CPU: a few queries over a long cache, several splits") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(202);
  for (DType t : {DType::f32, DType::bf16}) {
    for (auto [tq, d, kvh] : {std::tuple<int64_t, int64_t, int64_t>{1, 128, 8}, {3, 64, 2}, {1, 80, 1}, {2, 96, 4}, {1, 16, 2}, {2, 32, 4}}) {
      CAPTURE(dtype_name(t));
      CAPTURE(tq);
      CAPTURE(d);
      const int64_t b = 3, tmax = 1100, h = 8;
      const Input q = make_input(ctx, Shape{b, tq, h, d}, t, rng);
      const Input kc = make_input(ctx, Shape{b, tmax, kvh, d}, t, rng), vc = make_input(ctx, Shape{b, tmax, kvh, d}, t, rng);
      const int32_t lens[3] = {static_cast<int32_t>(tq), 257, 1100};
      Tensor hl = Tensor::empty(Shape{b}, DType::i32);
      std::memcpy(hl.data(), lens, sizeof lens);
      const Tensor dl = hl.to(ctx.device());
      Guarded out(ctx, q.ref.shape(), t);
      attention_decode(ctx, q.dev, kc.dev, vc.dev, dl, 0.125f, out.view);
      Tensor ref = Tensor::empty(q.ref.shape(), DType::f64);
      attention_decode(cpu, q.ref, kc.ref, vc.ref, hl, 0.125f, ref);
      const double err = parity_error(ctx, out.view, ref);
      CAPTURE(err);
      CHECK(err < parity_tolerance(t));
      CHECK(out.guards_intact(ctx));
      Tensor again = Tensor::empty(q.ref.shape(), t, ctx.device());
      attention_decode(ctx, q.dev, kc.dev, vc.dev, dl, 0.125f, again);
      CHECK(bitwise_equal(ctx, out.view, again));
    }
  }
}

TEST_CASE("attention CUDA variants for 99 KiB of shared memory (sm_86 / sm_89) match the CPU") {
  struct Cap {
    explicit Cap(size_t b) { attention_cuda_limit_shared_memory(b); }
    ~Cap() { attention_cuda_limit_shared_memory(0); }
  } cap(99 * 1024);
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(203);
  for (DType t : {DType::f32, DType::bf16}) {
    for (int64_t d : {64, 128}) {
      CAPTURE(dtype_name(t));
      CAPTURE(d);
      const int64_t n = 150, h = 4, kvh = 2;
      const std::vector<int64_t> lens{90, 60};
      const AttentionSeqs dseqs = packed_seqs(ctx, lens), hseqs = packed_seqs(cpu, lens);
      const Input q = make_input(ctx, Shape{n, h, d}, t, rng), k = make_input(ctx, Shape{n, kvh, d}, t, rng);
      const Input v = make_input(ctx, Shape{n, kvh, d}, t, rng), g = make_input(ctx, Shape{n, h, d}, t, rng);
      Tensor out = Tensor::empty(q.ref.shape(), t, ctx.device()), lse = Tensor::empty(Shape{n, h}, DType::f32, ctx.device());
      Tensor dq = Tensor::empty(q.ref.shape(), t, ctx.device()), dk = Tensor::empty(k.ref.shape(), t, ctx.device()),
             dv = Tensor::empty(v.ref.shape(), t, ctx.device());
      attention_forward(ctx, q.dev, k.dev, v.dev, dseqs, 0.1f, out, lse);
      attention_backward(ctx, q.dev, k.dev, v.dev, out, lse, g.dev, dseqs, 0.1f, dq, dk, dv);
      Tensor oref = Tensor::empty(q.ref.shape(), DType::f64), lref = Tensor::empty(Shape{n, h}, DType::f64);
      Tensor dqr = Tensor::empty(q.ref.shape(), DType::f64), dkr = Tensor::empty(k.ref.shape(), DType::f64),
             dvr = Tensor::empty(v.ref.shape(), DType::f64);
      attention_forward(cpu, q.ref, k.ref, v.ref, hseqs, 0.1f, oref, lref);
      attention_backward(cpu, q.ref, k.ref, v.ref, oref, lref, g.ref, hseqs, 0.1f, dqr, dkr, dvr);
      CHECK(parity_error(ctx, out, oref) < parity_tolerance(t));
      CHECK(parity_error(ctx, dq, dqr) < parity_tolerance(t));
      CHECK(parity_error(ctx, dk, dkr) < parity_tolerance(t));
      CHECK(parity_error(ctx, dv, dvr) < parity_tolerance(t));
    }
  }
  attention_cuda_limit_shared_memory(16 * 1024);  // below what any forward variant needs
  const Tensor q = Tensor::zeros(Shape{4, 2, 128}, DType::f32, ctx.device());
  Tensor out = Tensor::empty(q.shape(), DType::f32, ctx.device()), lse = Tensor::empty(Shape{4, 2}, DType::f32, ctx.device());
  CHECK_THROWS_WITH_AS(attention_forward(ctx, q, q, q, uniform_seqs(ctx, 1, 4), 1.0f, out, lse),
                       doctest::Contains("bytes of shared memory per block"), InvalidArgument);
}

TEST_CASE("attention CUDA refuses head dims it has no kernel for") {
  Context ctx(Device::cuda(0));
  const Tensor q = Tensor::zeros(Shape{4, 2, 48}, DType::bf16, ctx.device());
  Tensor out = Tensor::empty(q.shape(), DType::bf16, ctx.device()), lse = Tensor::empty(Shape{4, 2}, DType::f32, ctx.device());
  CHECK_THROWS_WITH_AS(attention_forward(ctx, q, q, q, uniform_seqs(ctx, 1, 4), 1.0f, out, lse),
                       doctest::Contains("CUDA head dims are 16, 32, 64, 80, 96, 128; got 48"), InvalidArgument);
}
