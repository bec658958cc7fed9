// matmul on CUDA against the CPU reference (label gpu): fp32 below 1e-5, bf16 below 1e-2,
// no NaN, poisoned outputs with guard rows, bitwise determinism.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/matmul.h"
#include "kernels/reference.h"
#include "runtime/error.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {

// Rounds a CPU f32 tensor through `t` so the reference sees what the GPU sees.
Tensor rounded(const Tensor& x, DType t) { return t == DType::f32 ? x : x.to_dtype(t).to_dtype(DType::f32); }

struct Case {
  int64_t batch, m, n, k;
  bool ta, tb, a3, b3, bias;
  float alpha, beta;
};

void run_case(Context& ctx, const Case& c, DType in, DType out, std::mt19937& rng) {
  const bool batched = c.a3 || c.b3;
  const auto sh = [&](bool three, int64_t r, int64_t cc) { return three ? Shape{c.batch, r, cc} : Shape{r, cc}; };
  const Tensor a = rounded(random_tensor(sh(c.a3, c.ta ? c.k : c.m, c.ta ? c.m : c.k), rng), in);
  const Tensor b = rounded(random_tensor(sh(c.b3, c.tb ? c.n : c.k, c.tb ? c.k : c.n), rng), in);
  const Tensor bias = rounded(random_tensor(Shape{c.n}, rng), out);
  const Shape cs = batched ? Shape{c.batch, c.m, c.n} : Shape{c.m, c.n};
  const Tensor c0 = rounded(random_tensor(cs, rng), out);

  // Device c between poisoned guard rows.
  const int64_t rows = cs.numel() / c.n;
  Tensor whole = Tensor::empty(Shape{rows + 4, c.n}, out, ctx.device());
  whole.fill_bytes(0xff, &ctx.compute());  // NaN in both f32 and bf16
  Tensor dc = whole.slice(2, 2 + rows).reshape(cs);
  const Tensor c0_out = c0.to_dtype(out);  // outlives the asynchronous copy below
  if (c.beta != 0.0f) dc.copy_from(c0_out, &ctx.compute());
  const Tensor da = a.to_dtype(in).to(ctx.device()), db = b.to_dtype(in).to(ctx.device());
  const Tensor dbias = bias.to_dtype(out).to(ctx.device());
  MatmulOptions o;
  o.trans_a = c.ta;
  o.trans_b = c.tb;
  o.alpha = c.alpha;
  o.beta = c.beta;
  o.bias = c.bias ? &dbias : nullptr;
  matmul(ctx, da, db, dc, o);
  ctx.synchronize();
  const Tensor host = whole.to(Device::cpu());
  MatmulOptions ro = o;
  ro.bias = c.bias ? &bias : nullptr;  // the host copy
  const std::vector<double> ref = matmul_reference(a, b, ro, &c0);
  const Tensor got = host.slice(2, 2 + rows);
  const double err = normalized_error(got, ref);
  const double tol = in == DType::f32 ? 1e-5 : 1e-2;
  CHECK(err < tol);
  for (int64_t i = 0; i < 2 * c.n; ++i) {
    CHECK(std::isnan(load_as_double(host.data(), out, static_cast<size_t>(i))));
    CHECK(std::isnan(load_as_double(host.data(), out, static_cast<size_t>(host.numel() - 1 - i))));
  }
}

}  // namespace

TEST_CASE("matmul CUDA vs CPU: f32 tight, bf16 loose, at odd sizes, transposes, batches, bias") {
  Context ctx(Device::cuda(0));
  std::mt19937 rng(11);
  const Case cases[] = {
      {1, 1, 1, 1, false, false, false, false, false, 1.0f, 0.0f},
      {1, 7, 33, 129, false, true, false, false, true, 1.0f, 0.0f},
      {1, 129, 7, 33, true, false, false, false, false, 0.5f, 1.0f},
      {1, 257, 130, 67, true, true, false, false, true, 1.0f, -0.5f},
      {3, 33, 17, 65, false, true, true, false, true, 1.0f, 0.0f},
      {4, 8, 64, 128, false, false, true, true, false, 2.0f, 0.0f},
      {2, 31, 9, 5, true, true, false, true, true, 1.0f, 1.0f},
  };
  for (const Case& c : cases) {
    CAPTURE(c.m);
    CAPTURE(c.n);
    CAPTURE(c.k);
    CAPTURE(c.batch);
    SUBCASE("f32") { run_case(ctx, c, DType::f32, DType::f32, rng); }
    SUBCASE("bf16 -> bf16") { run_case(ctx, c, DType::bf16, DType::bf16, rng); }
    SUBCASE("bf16 -> f32") { run_case(ctx, c, DType::bf16, DType::f32, rng); }
  }
}

TEST_CASE("matmul CUDA is bitwise deterministic") {
  Context ctx(Device::cuda(0));
  std::mt19937 rng(12);
  const Tensor a = random_tensor(Shape{512, 384}, rng).to_dtype(DType::bf16).to(ctx.device());
  const Tensor b = random_tensor(Shape{256, 384}, rng).to_dtype(DType::bf16).to(ctx.device());
  MatmulOptions o;
  o.trans_b = true;
  const Tensor c1 = matmul(ctx, a, b, o).to(Device::cpu());
  const Tensor c2 = matmul(ctx, a, b, o).to(Device::cpu());
  CHECK(std::memcmp(c1.data(), c2.data(), c1.nbytes()) == 0);
}

TEST_CASE("matmul CUDA refuses mixed devices") {
  Context ctx(Device::cuda(0));
  const Tensor a = Tensor::empty(Shape{4, 4}, DType::f32, ctx.device());
  const Tensor b = Tensor::empty(Shape{4, 4}, DType::f32);
  Tensor c = Tensor::empty(Shape{4, 4}, DType::f32, ctx.device());
  CHECK_THROWS_WITH_AS(matmul(ctx, a, b, c), doctest::Contains("different devices"), InvalidArgument);
}
