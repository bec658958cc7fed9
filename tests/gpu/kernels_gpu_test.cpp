// Every op except attention on CUDA against the CPU F64 reference (label gpu): F32 below
// 1e-5, BF16 below 1e-2, no NaN, poisoned outputs with guard regions, and a second run that
// must give the same bits. Dequantization gives the CPU's bits exactly.
#include <doctest/doctest.h>

#include <cstring>
#include <random>

#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/lora.h"
#include "kernels/quant.h"
#include "kernels/reference.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "kernels/swiglu.h"
#include "runtime/error.h"
#include "support/gpu_parity.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

namespace {

constexpr DType kTypes[] = {DType::f32, DType::bf16};

// Parity, guards and NaN in one place; `tol_type` picks the bound (the input precision).
void expect_close(Context& ctx, const Guarded& g, const Tensor& ref, DType tol_type) {
  const double err = parity_error(ctx, g.view, ref);
  CAPTURE(err);
  CHECK(err < parity_tolerance(tol_type));
  CHECK(g.guards_intact(ctx));
}

Tensor i32_tensor(Context& ctx, const std::vector<int32_t>& v) { return onn::test::i32_tensor(v).to(ctx.device()); }

}  // namespace

TEST_CASE("elementwise CUDA: cast, add, scale, fill, dropout") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(101);
  for (int64_t n : {1, 7, 4096, 100003}) {
    CAPTURE(n);
    const Input a32 = make_input(ctx, Shape{n}, DType::f32, rng);
    Guarded b(ctx, Shape{n}, DType::bf16), back(ctx, Shape{n}, DType::f32);
    cast(ctx, a32.dev, b.view);
    cast(ctx, b.view, back.view);
    ctx.synchronize();
    CHECK(std::memcmp(b.view.to(Device::cpu()).data(), a32.ref.to_dtype(DType::bf16).data(), 2 * n) == 0);
    expect_close(ctx, back, a32.ref, DType::bf16);
    for (DType t : kTypes) {
      CAPTURE(dtype_name(t));
      const Input x = make_input(ctx, Shape{n}, t, rng), y = make_input(ctx, Shape{n}, t, rng);
      Guarded s(ctx, Shape{n}, t);
      add(ctx, x.dev, y.dev, s.view);
      Tensor sref = Tensor::empty(Shape{n}, DType::f64);
      add(cpu, x.ref, y.ref, sref);
      expect_close(ctx, s, sref, t);
      scale(ctx, s.view, -0.75f);
      scale(cpu, sref, -0.75f);
      expect_close(ctx, s, sref, t);
      Guarded d(ctx, Shape{n}, t), d2(ctx, Shape{n}, t);
      Tensor dref = Tensor::empty(Shape{n}, DType::f64);
      dropout(ctx, x.dev, 0.3f, 1234, d.view);
      dropout(ctx, x.dev, 0.3f, 1234, d2.view);
      dropout(cpu, x.ref, 0.3f, 1234, dref);  // the same counter-based mask
      expect_close(ctx, d, dref, t);
      CHECK(bitwise_equal(ctx, d.view, d2.view));
      Guarded f(ctx, Shape{n}, t);
      fill(ctx, f.view, 0.5f);
      Tensor fref = Tensor::empty(Shape{n}, DType::f64);
      fill(cpu, fref, 0.5f);
      expect_close(ctx, f, fref, t);
    }
  }
}

TEST_CASE("embedding CUDA: lookup and deterministic scatter-add backward") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(102);
  for (DType t : kTypes) {
    for (auto [v, c, n] : {std::tuple<int64_t, int64_t, int64_t>{5, 3, 1}, {50, 67, 300}, {1000, 256, 2048}}) {
      CAPTURE(dtype_name(t));
      CAPTURE(c);
      std::vector<int32_t> ids(static_cast<size_t>(n));
      for (auto& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint32_t>(v < 8 ? v : v / 8));  // repeats
      const Tensor dids = i32_tensor(ctx, ids);
      const Tensor hids = dids.to(Device::cpu());
      const Input w = make_input(ctx, Shape{v, c}, t, rng);
      Guarded out(ctx, Shape{n, c}, t);
      embedding_forward(ctx, w.dev, dids, out.view);
      Tensor oref = Tensor::empty(Shape{n, c}, DType::f64);
      embedding_forward(cpu, w.ref, hids, oref);
      expect_close(ctx, out, oref, t);
      const Input g = make_input(ctx, Shape{n, c}, t, rng);
      Tensor dw = Tensor::zeros(Shape{v, c}, DType::f32, ctx.device()), dw2 = Tensor::zeros(Shape{v, c}, DType::f32, ctx.device());
      embedding_backward(ctx, dids, g.dev, dw);
      embedding_backward(ctx, dids, g.dev, dw2);
      Tensor dref = Tensor::zeros(Shape{v, c}, DType::f64);
      embedding_backward(cpu, hids, g.ref, dref);
      CHECK(parity_error(ctx, dw, dref) < 1e-5);
      CHECK(bitwise_equal(ctx, dw, dw2));
    }
  }
}

TEST_CASE("rmsnorm and add_rmsnorm CUDA: forward, backward, dweight") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(103);
  for (DType t : kTypes) {
    for (auto [n, c] : {std::pair<int64_t, int64_t>{1, 33}, {7, 64}, {600, 132}, {3, 1025}, {64, 4096}}) {
      CAPTURE(dtype_name(t));
      CAPTURE(n);
      CAPTURE(c);
      const float eps = 1e-5f;
      const Input x = make_input(ctx, Shape{n, c}, t, rng), w = make_input(ctx, Shape{c}, t, rng);
      Guarded y(ctx, Shape{n, c}, t), rstd(ctx, Shape{n}, DType::f32);
      rmsnorm_forward(ctx, x.dev, w.dev, eps, y.view, rstd.view);
      Tensor yref = Tensor::empty(Shape{n, c}, DType::f64), rref = Tensor::empty(Shape{n}, DType::f64);
      rmsnorm_forward(cpu, x.ref, w.ref, eps, yref, rref);
      expect_close(ctx, y, yref, t);
      expect_close(ctx, rstd, rref, DType::f32);
      const Input g = make_input(ctx, Shape{n, c}, t, rng);
      Guarded dx(ctx, Shape{n, c}, t), dw(ctx, Shape{c}, DType::f32), dw2(ctx, Shape{c}, DType::f32);
      rmsnorm_backward(ctx, x.dev, w.dev, rstd.view, g.dev, dx.view, &dw.view);
      Tensor dxref = Tensor::empty(Shape{n, c}, DType::f64), dwref = Tensor::empty(Shape{c}, DType::f64);
      rmsnorm_backward(cpu, x.ref, w.ref, rref, g.ref, dxref, &dwref);
      expect_close(ctx, dx, dxref, t);
      expect_close(ctx, dw, dwref, t);
      Tensor dx2 = Tensor::empty(Shape{n, c}, t, ctx.device());
      rmsnorm_backward(ctx, x.dev, w.dev, rstd.view, g.dev, dx2, &dw2.view);
      CHECK(bitwise_equal(ctx, dx.view, dx2));
      CHECK(bitwise_equal(ctx, dw.view, dw2.view));
      // Fused residual add: residual += x, then the norm of the sum.
      const Input res = make_input(ctx, Shape{n, c}, t, rng);
      Tensor res_dev = res.dev.to(ctx.device());
      Guarded y3(ctx, Shape{n, c}, t), r3(ctx, Shape{n}, DType::f32);
      add_rmsnorm_forward(ctx, res_dev, x.dev, w.dev, eps, y3.view, r3.view);
      Tensor sum = Tensor::empty(Shape{n, c}, DType::f64);
      add(cpu, res.ref, x.ref, sum);
      rmsnorm_forward(cpu, sum, w.ref, eps, yref, rref);
      CHECK(parity_error(ctx, res_dev, sum) < parity_tolerance(t));
      expect_close(ctx, y3, yref, t);
      // Accumulating backward into the residual-stream gradient.
      rmsnorm_forward(cpu, x.ref, w.ref, eps, yref, rref);  // rref back to x's statistics
      const Input acc = make_input(ctx, Shape{n, c}, t, rng);
      Tensor acc_dev = acc.dev.to(ctx.device()), acc_ref = clone(acc.ref);
      rmsnorm_backward(ctx, x.dev, w.dev, rstd.view, g.dev, acc_dev, nullptr, true);
      rmsnorm_backward(cpu, x.ref, w.ref, rref, g.ref, acc_ref, nullptr, true);
      CHECK(parity_error(ctx, acc_dev, acc_ref) < parity_tolerance(t));
    }
  }
}

TEST_CASE("rope CUDA: forward and backward, partial rotary, scaled frequencies, large positions") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(104);
  for (DType t : kTypes) {
    for (auto [d, partial, scaling] :
         {std::tuple<int64_t, double, RopeScaling::Type>{64, 1.0, RopeScaling::Type::none},
          {128, 1.0, RopeScaling::Type::llama3},
          {96, 0.5, RopeScaling::Type::linear},
          {80, 0.75, RopeScaling::Type::none}}) {
      CAPTURE(dtype_name(t));
      CAPTURE(d);
      RopeConfig cfg;
      cfg.head_dim = d;
      cfg.theta = 500000;
      cfg.partial_rotary_factor = partial;
      cfg.scaling.type = scaling;
      cfg.scaling.factor = 8;
      // The reference is the CPU F32 path: angles are p * inv_freq in fp32 on both sides (as
      // transformers computes them); at positions near 1e5 an F64 angle differs by ~1e-2 rad.
      const Tensor inv = rope_inv_freq_tensor(ctx, cfg);
      const Tensor inv32 = rope_inv_freq_tensor(cpu, cfg, DType::f32);
      const int64_t n = 77, heads = 5;
      std::vector<int32_t> pos(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i < 40 ? i : 100000 + i);
      const Tensor dpos = i32_tensor(ctx, pos), hpos = dpos.to(Device::cpu());
      const Input x = make_input(ctx, Shape{n, heads, d}, t, rng);
      Tensor xd = x.dev.to(ctx.device()), xr = x.ref.to_dtype(DType::f32);
      rope_forward(ctx, xd, dpos, inv);
      rope_forward(cpu, xr, hpos, inv32);
      CHECK(parity_error(ctx, xd, xr) < parity_tolerance(t));
      Tensor xd2 = x.dev.to(ctx.device());
      rope_forward(ctx, xd2, dpos, inv);
      CHECK(bitwise_equal(ctx, xd, xd2));
      rope_backward(ctx, xd, dpos, inv);
      rope_backward(cpu, xr, hpos, inv32);
      CHECK(parity_error(ctx, xd, xr) < parity_tolerance(t));
      CHECK(parity_error(ctx, xd, x.ref) < parity_tolerance(t));  // the inverse undoes the forward
    }
  }
}

TEST_CASE("swiglu CUDA: separate and concatenated layouts, forward and backward") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(105);
  for (DType t : kTypes) {
    for (auto [n, f] : {std::pair<int64_t, int64_t>{1, 7}, {33, 64}, {5, 1001}, {64, 14336}}) {
      CAPTURE(dtype_name(t));
      CAPTURE(f);
      const Input gate = make_input(ctx, Shape{n, f}, t, rng, 4.0), up = make_input(ctx, Shape{n, f}, t, rng);
      const Input g = make_input(ctx, Shape{n, f}, t, rng);
      Guarded out(ctx, Shape{n, f}, t), dg(ctx, Shape{n, f}, t), du(ctx, Shape{n, f}, t);
      swiglu_forward(ctx, gate.dev, up.dev, out.view);
      swiglu_backward(ctx, gate.dev, up.dev, g.dev, dg.view, du.view);
      Tensor oref = Tensor::empty(Shape{n, f}, DType::f64), dgref = Tensor::empty(Shape{n, f}, DType::f64),
             duref = Tensor::empty(Shape{n, f}, DType::f64);
      swiglu_forward(cpu, gate.ref, up.ref, oref);
      swiglu_backward(cpu, gate.ref, up.ref, g.ref, dgref, duref);
      expect_close(ctx, out, oref, t);
      expect_close(ctx, dg, dgref, t);
      expect_close(ctx, du, duref, t);
      const Input gu = make_input(ctx, Shape{n, 2 * f}, t, rng, 4.0);
      Guarded o2(ctx, Shape{n, f}, t), dgu(ctx, Shape{n, 2 * f}, t);
      swiglu_forward(ctx, gu.dev, o2.view);
      swiglu_backward(ctx, gu.dev, g.dev, dgu.view);
      Tensor o2ref = Tensor::empty(Shape{n, f}, DType::f64), dguref = Tensor::empty(Shape{n, 2 * f}, DType::f64);
      swiglu_forward(cpu, gu.ref, o2ref);
      swiglu_backward(cpu, gu.ref, g.ref, dguref);
      expect_close(ctx, o2, o2ref, t);
      expect_close(ctx, dgu, dguref, t);
      Tensor again = Tensor::empty(Shape{n, 2 * f}, t, ctx.device());
      swiglu_backward(ctx, gu.dev, g.dev, again);
      CHECK(bitwise_equal(ctx, dgu.view, again));
    }
  }
}

TEST_CASE("linear and LoRA CUDA: forward and backward, with and without LoRA dropout") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(106);
  for (DType t : kTypes) {
    for (float p : {0.0f, 0.1f}) {
      CAPTURE(dtype_name(t));
      CAPTURE(p);
      const int64_t n = 37, in = 72, out = 40, r = 8;
      const Input x = make_input(ctx, Shape{n, in}, t, rng), w = make_input(ctx, Shape{out, in}, t, rng);
      const Input bias = make_input(ctx, Shape{out}, t, rng), a = make_input(ctx, Shape{r, in}, t, rng);
      const Input b = make_input(ctx, Shape{out, r}, t, rng), g = make_input(ctx, Shape{n, out}, t, rng);
      LoraConfig cfg{2.0f, p, 77};
      Guarded y(ctx, Shape{n, out}, t), xa(ctx, Shape{n, r}, t);
      lora_forward(ctx, x.dev, w.dev, &bias.dev, a.dev, b.dev, cfg, y.view, xa.view);
      Tensor yref = Tensor::empty(Shape{n, out}, DType::f64), xaref = Tensor::empty(Shape{n, r}, DType::f64);
      lora_forward(cpu, x.ref, w.ref, &bias.ref, a.ref, b.ref, cfg, yref, xaref);
      expect_close(ctx, y, yref, t);
      expect_close(ctx, xa, xaref, t);
      Guarded dx(ctx, Shape{n, in}, t), da(ctx, Shape{r, in}, DType::f32), db(ctx, Shape{out, r}, DType::f32);
      LoraGrads lg;
      lg.dx = &dx.view;
      lg.da = &da.view;
      lg.db = &db.view;
      lora_backward(ctx, x.dev, w.dev, a.dev, b.dev, xa.view, g.dev, cfg, lg);
      Tensor dxref = Tensor::empty(x.ref.shape(), DType::f64), daref = Tensor::empty(a.ref.shape(), DType::f64),
             dbref = Tensor::empty(b.ref.shape(), DType::f64);
      LoraGrads rg;
      rg.dx = &dxref;
      rg.da = &daref;
      rg.db = &dbref;
      lora_backward(cpu, x.ref, w.ref, a.ref, b.ref, xaref, g.ref, cfg, rg);
      expect_close(ctx, dx, dxref, t);
      expect_close(ctx, da, daref, t);
      expect_close(ctx, db, dbref, t);
      // Linear: dx, dw (F32 master), dbias.
      Guarded ly(ctx, Shape{n, out}, t), ldx(ctx, Shape{n, in}, t), ldw(ctx, Shape{out, in}, DType::f32),
          ldb(ctx, Shape{out}, DType::f32);
      linear_forward(ctx, x.dev, w.dev, &bias.dev, ly.view);
      LinearGrads gr;
      gr.dx = &ldx.view;
      gr.dw = &ldw.view;
      gr.dbias = &ldb.view;
      linear_backward(ctx, x.dev, w.dev, g.dev, gr);
      Tensor lyref = Tensor::empty(Shape{n, out}, DType::f64), ldxref = Tensor::empty(Shape{n, in}, DType::f64),
             ldwref = Tensor::empty(Shape{out, in}, DType::f64), ldbref = Tensor::empty(Shape{out}, DType::f64);
      linear_forward(cpu, x.ref, w.ref, &bias.ref, lyref);
      LinearGrads rr;
      rr.dx = &ldxref;
      rr.dw = &ldwref;
      rr.dbias = &ldbref;
      linear_backward(cpu, x.ref, w.ref, g.ref, rr);
      expect_close(ctx, ly, lyref, t);
      expect_close(ctx, ldx, ldxref, t);
      expect_close(ctx, ldw, ldwref, t);
      expect_close(ctx, ldb, ldbref, t);
    }
  }
}

TEST_CASE("cross-entropy CUDA: loss, in-place gradient, ignored tokens, chunked LM head") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(107);
  for (DType t : kTypes) {
    for (auto [n, v] : {std::pair<int64_t, int64_t>{1, 5}, {9, 1001}, {17, 32000}, {4, 128256}}) {
      CAPTURE(dtype_name(t));
      CAPTURE(v);
      std::vector<int32_t> labels(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        labels[static_cast<size_t>(i)] = i % 4 == 1 ? kIgnoreIndex : static_cast<int32_t>(rng() % static_cast<uint32_t>(v));
      const Tensor dl = i32_tensor(ctx, labels), hl = dl.to(Device::cpu());
      const Input logits = make_input(ctx, Shape{n, v}, t, rng, 8.0);
      Tensor valid = Tensor::empty(Shape{1}, DType::f32, ctx.device());
      count_valid_labels(ctx, dl, kIgnoreIndex, valid);
      Guarded work(ctx, Shape{n, v}, t), tl(ctx, Shape{n}, DType::f32), loss(ctx, Shape{1}, DType::f32);
      work.view.copy_from(logits.dev);
      cross_entropy_forward_backward(ctx, work.view, dl, valid, tl.view);
      mean_loss(ctx, tl.view, valid, loss.view);
      Tensor rwork = clone(logits.ref), rvalid = Tensor::empty(Shape{1}, DType::f64),
             rtl = Tensor::empty(Shape{n}, DType::f64), rloss = Tensor::empty(Shape{1}, DType::f64);
      count_valid_labels(cpu, hl, kIgnoreIndex, rvalid);
      cross_entropy_forward_backward(cpu, rwork, hl, rvalid, rtl);
      mean_loss(cpu, rtl, rvalid, rloss);
      expect_close(ctx, work, rwork, t);
      expect_close(ctx, tl, rtl, DType::f32);
      expect_close(ctx, loss, rloss, DType::f32);
      Tensor work2 = logits.dev.to(ctx.device()), tl2 = Tensor::empty(Shape{n}, DType::f32, ctx.device());
      cross_entropy_forward_backward(ctx, work2, dl, valid, tl2);
      CHECK(bitwise_equal(ctx, work.view, work2));
      CHECK(bitwise_equal(ctx, tl.view, tl2));
    }
    // Fused LM head in chunks against the CPU reference.
    const int64_t n = 50, c = 64, v = 3001;
    std::vector<int32_t> labels(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      labels[static_cast<size_t>(i)] = i % 7 == 3 ? kIgnoreIndex : static_cast<int32_t>(rng() % static_cast<uint32_t>(v));
    const Tensor dl = i32_tensor(ctx, labels), hl = dl.to(Device::cpu());
    const Input h = make_input(ctx, Shape{n, c}, t, rng), w = make_input(ctx, Shape{v, c}, t, rng);
    Tensor rloss = Tensor::empty(Shape{1}, DType::f64), rdh = Tensor::empty(Shape{n, c}, DType::f64),
           rdw = Tensor::empty(Shape{v, c}, DType::f64);
    lm_head_cross_entropy(cpu, h.ref, w.ref, hl, rloss, &rdh, &rdw);
    for (int64_t chunk : {7, 16, 64}) {
      CAPTURE(chunk);
      LmHeadLossOptions o;
      o.chunk_tokens = chunk;
      Guarded loss(ctx, Shape{1}, DType::f32), dh(ctx, Shape{n, c}, t), dw(ctx, Shape{v, c}, DType::f32);
      lm_head_cross_entropy(ctx, h.dev, w.dev, dl, loss.view, &dh.view, &dw.view, o);
      expect_close(ctx, loss, rloss, t);
      expect_close(ctx, dh, rdh, t);
      expect_close(ctx, dw, rdw, t);
    }
  }
}

TEST_CASE("SlicedLmHeadLoss CUDA matches the CPU reference, and its bits do not depend on the slice cuts") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(110);
  for (DType t : kTypes) {
    CAPTURE(dtype_name(t));
    const int64_t n = 50, c = 64, v = 3001, granule = 512;
    std::vector<int32_t> labels(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      labels[static_cast<size_t>(i)] = i % 7 == 3 ? kIgnoreIndex : static_cast<int32_t>(rng() % static_cast<uint32_t>(v));
    const Tensor dl = i32_tensor(ctx, labels), hl = dl.to(Device::cpu());
    const Input h = make_input(ctx, Shape{n, c}, t, rng), w = make_input(ctx, Shape{v, c}, t, rng);
    Tensor rloss = Tensor::empty(Shape{1}, DType::f64), rdh = Tensor::empty(Shape{n, c}, DType::f64);
    lm_head_cross_entropy(cpu, h.ref, w.ref, hl, rloss, &rdh, nullptr);
    Tensor first_dh;
    for (const std::vector<int64_t>& cuts : {std::vector<int64_t>{0, v}, {0, 1024, 2048, v}, {0, 512, v}}) {
      CAPTURE(cuts.size());
      SlicedLmHeadLoss s(ctx, h.dev, dl, v, nullptr, 16, granule);
      for (size_t i = 0; i + 1 < cuts.size(); ++i) s.forward_slice(cuts[i], w.dev.slice(cuts[i], cuts[i + 1]));
      Guarded loss(ctx, Shape{1}, DType::f32), dh(ctx, Shape{n, c}, t);
      s.finish(loss.view);
      for (size_t i = cuts.size() - 1; i-- > 0;) s.backward_slice(cuts[i], w.dev.slice(cuts[i], cuts[i + 1]), dh.view);
      expect_close(ctx, loss, rloss, t);
      expect_close(ctx, dh, rdh, t);
      if (!first_dh.defined()) first_dh = dh.view.to(ctx.device());
      else CHECK(bitwise_equal(ctx, dh.view, first_dh));
    }
  }
}

TEST_CASE("adamw CUDA: fused update with BF16 compute copy, gradient norm is reproducible") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(108);
  for (DType gt : kTypes) {
    const int64_t n = 100003;
    const Input p = make_input(ctx, Shape{n}, DType::f32, rng);
    Tensor dp = p.dev.to(ctx.device()), rp = clone(p.ref);
    Tensor dm = Tensor::zeros(Shape{n}, DType::f32, ctx.device()), dv = Tensor::zeros(Shape{n}, DType::f32, ctx.device());
    Tensor rm = Tensor::zeros(Shape{n}, DType::f64), rv = Tensor::zeros(Shape{n}, DType::f64);
    Guarded copy(ctx, Shape{n}, DType::bf16);
    AdamWConfig cfg;
    cfg.lr = 1e-2f;
    cfg.weight_decay = 0.05f;
    for (int64_t step = 1; step <= 3; ++step) {
      const Input g = make_input(ctx, Shape{n}, gt, rng);
      cfg.step = step;
      cfg.grad_scale = 0.5f;
      adamw_step(ctx, dp, g.dev, dm, dv, cfg, &copy.view);
      adamw_step(cpu, rp, g.ref, rm, rv, cfg);
    }
    CHECK(parity_error(ctx, dp, rp) < 1e-5);
    CHECK(parity_error(ctx, dm, rm) < 1e-5);
    CHECK(parity_error(ctx, dv, rv) < 1e-5);
    expect_close(ctx, copy, rp, DType::bf16);
  }
  const Input a = make_input(ctx, Shape{1000}, DType::f32, rng), b = make_input(ctx, Shape{77777}, DType::bf16, rng);
  const double norm = global_grad_norm(ctx, {&a.dev, &b.dev});
  const double again = global_grad_norm(ctx, {&a.dev, &b.dev});
  const double ref = std::sqrt(dot(a.ref, a.ref) + dot(b.ref, b.ref));
  CHECK(norm == doctest::Approx(ref).epsilon(1e-5));
  CHECK(norm == again);
}

TEST_CASE("argmax_rows CUDA matches the CPU, first index on ties") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(109);
  for (DType t : kTypes) {
    const Input l = make_input(ctx, Shape{9, 32003}, t, rng);
    Tensor host = l.dev.to(Device::cpu());
    store_from_double(host.data(), t, 5, 50.0);  // a tie in row 0 at 5 and 9
    store_from_double(host.data(), t, 9, 50.0);
    const Tensor dev = host.to(ctx.device());
    Tensor out = Tensor::empty(Shape{9}, DType::i32, ctx.device()), ref = Tensor::empty(Shape{9}, DType::i32);
    argmax_rows(ctx, dev, out);
    argmax_rows(cpu, host.to_dtype(DType::f32), ref);  // exact widening; the CPU op takes F32 / F64
    ctx.synchronize();
    const Tensor got = out.to(Device::cpu());
    CHECK(got.data_as<int32_t>()[0] == 5);
    CHECK(std::memcmp(got.data(), ref.data(), 9 * 4) == 0);
  }
}

TEST_CASE("CUDA ops refuse CPU tensors and F64 data, naming the op") {
  Context ctx(Device::cuda(0));
  const Tensor x = Tensor::zeros(Shape{2, 8}, DType::f32), w = Tensor::zeros(Shape{8}, DType::f32, ctx.device());
  Tensor y = Tensor::empty(Shape{2, 8}, DType::f32, ctx.device()), r = Tensor::empty(Shape{2}, DType::f32, ctx.device());
  CHECK_THROWS_WITH_AS(rmsnorm_forward(ctx, x, w, 1e-5f, y, r), doctest::Contains("x is on cpu but the context is on cuda:0"),
                       InvalidArgument);
  const Tensor x64 = Tensor::zeros(Shape{2, 8}, DType::f64, ctx.device());
  CHECK_THROWS_WITH_AS(swiglu_forward(ctx, x64, x64, y), doctest::Contains("F32 or BF16 on CUDA"), InvalidArgument);
}

TEST_CASE("dequantize CUDA: nf4 (plain, double-quantized, a row view), int8 and fp8 give the CPU's bits") {
  Context ctx(Device::cuda(0)), cpu(Device::cpu());
  std::mt19937 rng(21);
  const Tensor w = random_tensor(Shape{130, 160}, rng);
  for (QuantFormat f : {QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8})
    for (bool nested : {false, true}) {
      CAPTURE(quant_format_name(f));
      CAPTURE(nested);
      const QuantTensor host = quantize(w, f, nested, cpu_allocator());
      std::vector<Tensor> parts;
      for (const Tensor& p : host.parts()) parts.push_back(p.to(ctx.device()));
      size_t next = 0;
      const QuantTensor dev = host.with_parts(parts, next);
      for (const auto& [r0, r1] : {std::pair<int64_t, int64_t>{0, 130}, {33, 101}}) {
        Tensor want = Tensor::empty(Shape{r1 - r0, 160}, DType::f32);
        dequantize(cpu, host.row_slice(r0, r1), want);
        for (DType t : kTypes) {
          Guarded out(ctx, Shape{r1 - r0, 160}, t);
          dequantize(ctx, dev.row_slice(r0, r1), out.view);
          const Tensor got = out.view.to(Device::cpu());
          const Tensor expect = t == DType::f32 ? want : want.to_dtype(DType::bf16);
          CHECK(std::memcmp(got.data(), expect.data(), got.nbytes()) == 0);
          CHECK(out.guards_intact(ctx));
        }
      }
    }
}
