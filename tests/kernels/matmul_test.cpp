// matmul on the CPU against a double-precision loop: odd sizes, transposes, batches,
// broadcasting, alpha/beta, bias; poisoned outputs with guard rows; argument errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/reference.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/parallel.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {

constexpr int kGuardRows = 2;
constexpr float kPoison = NAN;

// c lives between guard rows of a larger buffer; everything is poisoned first.
struct Guarded {
  Tensor whole, c;
  Guarded(const Shape& cs) {
    Shape ws;
    const int64_t rows = cs.numel() / cs[cs.rank() - 1];
    ws.push_back(rows + 2 * kGuardRows);
    ws.push_back(cs[cs.rank() - 1]);
    whole = Tensor::empty(ws, DType::f32);
    float* p = whole.data_as<float>();
    for (int64_t i = 0; i < whole.numel(); ++i) p[i] = kPoison;
    c = whole.slice(kGuardRows, kGuardRows + rows).reshape(cs);
  }
  bool guards_intact() const {
    const float* p = whole.data_as<float>();
    const int64_t cols = whole.dim(1), n = whole.numel();
    for (int64_t i = 0; i < kGuardRows * cols; ++i)
      if (!std::isnan(p[i]) || !std::isnan(p[n - 1 - i])) return false;
    return true;
  }
};

Shape shape_of(bool batched, int64_t batch, int64_t r, int64_t c) {
  return batched ? Shape{batch, r, c} : Shape{r, c};
}

}  // namespace

TEST_CASE("matmul CPU matches the double-precision reference at odd sizes and transposes") {
  Context ctx(Device::cpu());
  std::mt19937 rng(42);
  const int64_t sizes[] = {1, 7, 33, 129};
  for (int64_t m : sizes)
    for (int64_t n : sizes)
      for (int64_t k : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}})
        for (int ta = 0; ta < 2; ++ta)
          for (int tb = 0; tb < 2; ++tb) {
            if ((m * n * k) > 129 * 129 * 33 && (ta || tb)) continue;  // keep the sweep quick
            CAPTURE(m);
            CAPTURE(n);
            CAPTURE(k);
            CAPTURE(ta);
            CAPTURE(tb);
            const Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, rng);
            const Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, rng);
            Guarded g(Shape{m, n});
            MatmulOptions o;
            o.trans_a = ta;
            o.trans_b = tb;
            matmul(ctx, a, b, g.c, o);
            CHECK(normalized_error(g.c, matmul_reference(a, b, o)) < 1e-5);
            CHECK(g.guards_intact());
          }
}

TEST_CASE("matmul CPU: batches, broadcasting, alpha, beta and bias") {
  Context ctx(Device::cpu());
  std::mt19937 rng(3);
  const int64_t batch = 3, m = 17, n = 9, k = 33;
  for (int a3 = 0; a3 < 2; ++a3)
    for (int b3 = 0; b3 < 2; ++b3) {
      if (!a3 && !b3) continue;
      CAPTURE(a3);
      CAPTURE(b3);
      const Tensor a = random_tensor(shape_of(a3, batch, k, m), rng);  // trans_a
      const Tensor b = random_tensor(shape_of(b3, batch, n, k), rng);  // trans_b
      const Tensor bias = random_tensor(Shape{n}, rng);
      Guarded g(Shape{batch, m, n});
      const Tensor c0 = random_tensor(Shape{batch, m, n}, rng);
      g.c.copy_from(c0);
      MatmulOptions o;
      o.trans_a = true;
      o.trans_b = true;
      o.alpha = 0.75f;
      o.beta = -1.5f;
      o.bias = &bias;
      matmul(ctx, a, b, g.c, o);
      CHECK(normalized_error(g.c, matmul_reference(a, b, o, &c0)) < 1e-5);
      CHECK(g.guards_intact());
    }
}

TEST_CASE("matmul CPU: beta = 0 ignores (poisoned) c, K = 0 gives zeros") {
  Context ctx(Device::cpu());
  std::mt19937 rng(5);
  const Tensor a = random_tensor(Shape{5, 4}, rng), b = random_tensor(Shape{4, 6}, rng);
  Guarded g(Shape{5, 6});
  matmul(ctx, a, b, g.c);
  for (int64_t i = 0; i < 30; ++i) CHECK_FALSE(std::isnan(g.c.data_as<float>()[i]));
  const Tensor a0 = Tensor::empty(Shape{5, 0}, DType::f32), b0 = Tensor::empty(Shape{0, 6}, DType::f32);
  Guarded z(Shape{5, 6});
  matmul(ctx, a0, b0, z.c);
  for (int64_t i = 0; i < 30; ++i) CHECK(z.c.data_as<float>()[i] == 0.0f);
  CHECK(z.guards_intact());
}

TEST_CASE("matmul allocating form") {
  Context ctx(Device::cpu());
  const Tensor a = Tensor::from_floats(Shape{2, 2}, {1, 2, 3, 4});
  const Tensor b = Tensor::from_floats(Shape{2, 2}, {5, 6, 7, 8});
  const Tensor c = matmul(ctx, a, b);
  CHECK(c.shape() == Shape{2, 2});
  CHECK(c.data_as<float>()[0] == 19.0f);
  CHECK(c.data_as<float>()[3] == 50.0f);
  MatmulOptions t;
  t.trans_b = true;  // y = x W^T
  CHECK(matmul(ctx, a, b, t).data_as<float>()[1] == 1 * 7 + 2 * 8);
}

TEST_CASE("matmul argument errors name the op and the shapes") {
  Context ctx(Device::cpu());
  const Tensor a = Tensor::empty(Shape{4, 3}, DType::f32);
  const Tensor b = Tensor::empty(Shape{5, 6}, DType::f32);
  Tensor c = Tensor::empty(Shape{4, 6}, DType::f32);
  CHECK_THROWS_WITH_AS(matmul(ctx, a, b, c), doctest::Contains("matmul(a=F32(4, 3)@cpu, b=F32(5, 6)@cpu"),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(matmul(ctx, a, b, c), doctest::Contains("inner dimensions differ (3 vs 5)"), InvalidArgument);
  const Tensor b2 = Tensor::empty(Shape{3, 6}, DType::f32);
  Tensor bad_c = Tensor::empty(Shape{4, 5}, DType::f32);
  CHECK_THROWS_WITH_AS(matmul(ctx, a, b2, bad_c), doctest::Contains("c must be (4, 6)"), InvalidArgument);
  const Tensor bf = Tensor::empty(Shape{3, 6}, DType::bf16);
  CHECK_THROWS_WITH_AS(matmul(ctx, a, bf, c), doctest::Contains("different dtypes"), InvalidArgument);
  const Tensor abf = Tensor::empty(Shape{4, 3}, DType::bf16);
  Tensor cbf = Tensor::empty(Shape{4, 6}, DType::bf16);
  CHECK_THROWS_WITH_AS(matmul(ctx, abf, bf, cbf), doctest::Contains("CPU takes F32"), InvalidArgument);
  const Tensor bias = Tensor::empty(Shape{5}, DType::f32);
  MatmulOptions o;
  o.bias = &bias;
  CHECK_THROWS_WITH_AS(matmul(ctx, a, b2, c, o), doctest::Contains("bias must be (6,)"), InvalidArgument);
  const Tensor a3 = Tensor::empty(Shape{2, 4, 3}, DType::f32), b3 = Tensor::empty(Shape{3, 3, 6}, DType::f32);
  Tensor c3 = Tensor::empty(Shape{2, 4, 6}, DType::f32);
  CHECK_THROWS_WITH_AS(matmul(ctx, a3, b3, c3), doctest::Contains("batch sizes differ"), InvalidArgument);
  CHECK_THROWS_WITH_AS(matmul(ctx, a3, b2, c), doctest::Contains("c must be rank 3"), InvalidArgument);
  Tensor alias = Tensor::empty(Shape{4, 3}, DType::f32);
  const Tensor sq = Tensor::empty(Shape{3, 3}, DType::f32);
  CHECK_THROWS_WITH_AS(matmul(ctx, alias, sq, alias), doctest::Contains("aliases"), InvalidArgument);
}

namespace {

// An f32 tensor holding x's values rounded to bf16.
Tensor bf16_rounded(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), DType::f32);
  for (int64_t i = 0; i < x.numel(); ++i) y.data_as<float>()[i] = bf16_bits_to_f32(f32_to_bf16_bits(x.data_as<float>()[i]));
  return y;
}

std::vector<float> values(const Tensor& t) { return {t.data_as<float>(), t.data_as<float>() + t.numel()}; }

// --cpu-matmul for one test, then back to f32 (the setting is process-wide).
struct CpuMatmulScope {
  explicit CpuMatmulScope(CpuMatmul m) { set_cpu_matmul(m); }
  ~CpuMatmulScope() { set_cpu_matmul(CpuMatmul::f32); }
};

}  // namespace

TEST_CASE("matmul CPU in bf16: the products of bf16-rounded inputs, every layout, the same bits at any thread count") {
  const std::string missing = cpu_bf16_matmul_missing();
  if (!missing.empty()) {
    MESSAGE("skipped: " << missing);
    CHECK_THROWS_AS(set_cpu_matmul(CpuMatmul::bf16), InvalidArgument);
    return;
  }
  Context ctx(Device::cpu());
  std::mt19937 rng(11);
  const int64_t batch = 2, m = 96, n = 80, k = 300;  // 2.3M multiply-adds a batch entry: the bf16 path
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int shared_b = 0; shared_b < 2; ++shared_b) {
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(shared_b);
        const Tensor a = random_tensor(ta ? Shape{batch, k, m} : Shape{batch, m, k}, rng);
        const Shape bs = tb ? Shape{n, k} : Shape{k, n};
        const Tensor b = random_tensor(shared_b ? bs : Shape{batch, bs[0], bs[1]}, rng);
        const Tensor bias = random_tensor(Shape{n}, rng), c0 = random_tensor(Shape{batch, m, n}, rng);
        MatmulOptions o;
        o.trans_a = ta;
        o.trans_b = tb;
        o.alpha = 0.5f;
        o.beta = 0.25f;
        o.bias = &bias;
        std::vector<std::vector<float>> results;
        for (int threads : {1, 2, 3}) {
          set_cpu_threads(threads);
          CpuMatmulScope bf16(CpuMatmul::bf16);
          Guarded g(Shape{batch, m, n});
          g.c.copy_from(c0);
          matmul(ctx, a, b, g.c, o);
          CHECK(g.guards_intact());
          results.push_back(values(g.c));
        }
        set_cpu_threads(0);
        Tensor first = Tensor::empty(Shape{batch, m, n}, DType::f32);
        std::copy(results[0].begin(), results[0].end(), first.data_as<float>());
        // Exact products of the rounded inputs, summed in f32: close to the double sum of them,
        // and visibly not the f32 product of the inputs themselves.
        CHECK(normalized_error(first, matmul_reference(bf16_rounded(a), bf16_rounded(b), o, &c0)) < 1e-5);
        CHECK(normalized_error(first, matmul_reference(a, b, o, &c0)) > 1e-4);
        for (const std::vector<float>& r : results) CHECK(std::memcmp(r.data(), results[0].data(), r.size() * 4) == 0);
      }
  // A stored BF16 b (--quantize bf16) is multiplied as it is: the bits of its f32 values in bf16
  // mode; below the bf16 path's size, the f32 product of its widened values.
  {
    const Tensor a = random_tensor(Shape{96, 300}, rng), b = random_tensor(Shape{80, 300}, rng);
    const Tensor b16 = b.to_dtype(DType::bf16);
    MatmulOptions o;
    o.trans_b = true;
    CpuMatmulScope bf16(CpuMatmul::bf16);
    CHECK(values(matmul(ctx, a, b16, o, DType::f32)) == values(matmul(ctx, a, b, o)));
    const Tensor small_a = random_tensor(Shape{4, 300}, rng);
    const std::vector<float> mixed = values(matmul(ctx, small_a, b16, o, DType::f32));
    set_cpu_matmul(CpuMatmul::f32);
    CHECK(mixed == values(matmul(ctx, small_a, bf16_rounded(b), o)));
    CHECK_THROWS_WITH_AS(matmul(ctx, small_a, b16, o, DType::f32), doctest::Contains("different dtypes"), InvalidArgument);
  }
  // Small products and single rows stay f32: the bits of the f32 path.
  const Tensor a = random_tensor(Shape{8, 64}, rng), b = random_tensor(Shape{64, 32}, rng);
  const std::vector<float> f32 = values(matmul(ctx, a, b));
  CpuMatmulScope bf16(CpuMatmul::bf16);
  CHECK(values(matmul(ctx, a, b)) == f32);
}
