// RMSNorm, fused add + RMSNorm, RoPE, SwiGLU, elementwise casts/adds and embedding: the
// memory-bound ops, reported as bytes/s and % of the device copy bandwidth.
#include "bench_util.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace onn::bench {

namespace {

double sz(DType t) { return static_cast<double>(dtype_size(t)); }

OpSetup rmsnorm_fwd(int64_t n, int64_t c) {
  return [=](Context& ctx, DType t) {
    Tensor x = random_on(ctx, Shape{n, c}, t), w = random_on(ctx, Shape{c}, t);
    Tensor y = Tensor::empty(Shape{n, c}, t, ctx.allocator()), r = Tensor::empty(Shape{n}, DType::f32, ctx.allocator());
    return OpRun{[=, &ctx]() mutable { rmsnorm_forward(ctx, x, w, 1e-5f, y, r); }, (2.0 * n * c + c) * sz(t) + 4.0 * n};
  };
}

OpSetup rmsnorm_bwd(int64_t n, int64_t c) {
  return [=](Context& ctx, DType t) {
    Tensor x = random_on(ctx, Shape{n, c}, t), w = random_on(ctx, Shape{c}, t), g = random_on(ctx, Shape{n, c}, t, 1, 3);
    Tensor r = random_on(ctx, Shape{n}, DType::f32, 1, 4), dx = Tensor::empty(Shape{n, c}, t, ctx.allocator());
    Tensor dw = Tensor::empty(Shape{c}, DType::f32, ctx.allocator());
    return OpRun{[=, &ctx]() mutable { rmsnorm_backward(ctx, x, w, r, g, dx, &dw); }, 3.0 * n * c * sz(t) + 4.0 * n};
  };
}

OpSetup add_rmsnorm(int64_t n, int64_t c) {
  return [=](Context& ctx, DType t) {
    Tensor res = random_on(ctx, Shape{n, c}, t), x = random_on(ctx, Shape{n, c}, t, 1, 3), w = random_on(ctx, Shape{c}, t);
    Tensor y = Tensor::empty(Shape{n, c}, t, ctx.allocator()), r = Tensor::empty(Shape{n}, DType::f32, ctx.allocator());
    return OpRun{[=, &ctx]() mutable { add_rmsnorm_forward(ctx, res, x, w, 1e-5f, y, r); }, 4.0 * n * c * sz(t) + 4.0 * n};
  };
}

OpSetup rope(int64_t n, int64_t heads, int64_t d, bool backward) {
  return [=](Context& ctx, DType t) {
    RopeConfig cfg;
    cfg.head_dim = d;
    cfg.theta = 500000;
    Tensor x = random_on(ctx, Shape{n, heads, d}, t), inv = rope_inv_freq_tensor(ctx, cfg);
    Tensor pos = random_ids(ctx, n, 8192);
    return OpRun{[=, &ctx]() mutable { backward ? rope_backward(ctx, x, pos, inv) : rope_forward(ctx, x, pos, inv); },
                 2.0 * n * heads * d * sz(t) + 4.0 * n};
  };
}

OpSetup swiglu(int64_t n, int64_t f, bool backward) {
  return [=](Context& ctx, DType t) {
    Tensor g = random_on(ctx, Shape{n, f}, t, 4), u = random_on(ctx, Shape{n, f}, t, 1, 3);
    Tensor o = Tensor::empty(Shape{n, f}, t, ctx.allocator());
    if (!backward) return OpRun{[=, &ctx]() mutable { swiglu_forward(ctx, g, u, o); }, 3.0 * n * f * sz(t)};
    Tensor d = random_on(ctx, Shape{n, f}, t, 1, 5), dg = Tensor::empty(Shape{n, f}, t, ctx.allocator());
    return OpRun{[=, &ctx]() mutable { swiglu_backward(ctx, g, u, d, dg, o); }, 5.0 * n * f * sz(t)};
  };
}

OpSetup cast_to(int64_t n, bool to_bf16) {
  return [=](Context& ctx, DType) {
    const DType src = to_bf16 ? DType::f32 : DType::bf16, dst = to_bf16 ? DType::bf16 : DType::f32;
    Tensor a = random_on(ctx, Shape{n}, src), b = Tensor::empty(Shape{n}, dst, ctx.allocator());
    return OpRun{[=, &ctx]() mutable { cast(ctx, a, b); }, static_cast<double>(n) * (sz(src) + sz(dst))};
  };
}

OpSetup residual_add(int64_t n) {
  return [=](Context& ctx, DType t) {
    Tensor a = random_on(ctx, Shape{n}, t), b = random_on(ctx, Shape{n}, t, 1, 3);
    return OpRun{[=, &ctx]() mutable { add(ctx, a, b, a); }, 3.0 * n * sz(t)};
  };
}

OpSetup embedding(int64_t v, int64_t c, int64_t n, bool backward) {
  return [=](Context& ctx, DType t) {
    Tensor ids = random_ids(ctx, n, v);
    if (!backward) {
      Tensor w = random_on(ctx, Shape{v, c}, t), o = Tensor::empty(Shape{n, c}, t, ctx.allocator());
      return OpRun{[=, &ctx]() mutable { embedding_forward(ctx, w, ids, o); }, 2.0 * n * c * sz(t) + 4.0 * n};
    }
    Tensor g = random_on(ctx, Shape{n, c}, t), dw = Tensor::zeros(Shape{v, c}, DType::f32, ctx.device());
    // Reads dout and read-modify-writes the touched F32 rows (at most N of them).
    return OpRun{[=, &ctx]() mutable { embedding_backward(ctx, ids, g, dw); }, n * c * (sz(t) + 8.0) + 4.0 * n};
  };
}

void register_memory_bound(bool cuda) {
  const int64_t n = kBatchTokens;
  for (const ModelShape& m : {kLlama3_8B, kTinyLlama}) {
    const std::string s = std::string(m.name) + "_N4096";
    register_op("rmsnorm_forward", s, rmsnorm_fwd(n, m.c), cuda, false);
    register_op("rmsnorm_backward", s, rmsnorm_bwd(n, m.c), cuda, false);
    register_op("add_rmsnorm_forward", s, add_rmsnorm(n, m.c), cuda, false);
    register_op("rope_forward", s + "_q", rope(n, m.h, m.d, false), cuda, false);
    register_op("rope_backward", s + "_q", rope(n, m.h, m.d, true), cuda, false);
    register_op("swiglu_forward", s, swiglu(n, m.f, false), cuda, false);
    register_op("swiglu_backward", s, swiglu(n, m.f, true), cuda, false);
    register_op("embedding_forward", s, embedding(m.v, m.c, n, false), cuda, false);
    register_op("embedding_backward", s, embedding(m.v, m.c, n, true), cuda, false, false);
    register_op("add", s, residual_add(n * m.c), cuda, false);
  }
  register_op("cast_f32_to_bf16", "64M", cast_to(int64_t{64} << 20, true), cuda, false, false);
  register_op("cast_bf16_to_f32", "64M", cast_to(int64_t{64} << 20, false), cuda, false, false);
  // Small CPU shapes: the reference path, for regressions, not for peak figures.
  register_op("rmsnorm_forward", "N64_C1024", rmsnorm_fwd(64, 1024), false, true);
  register_op("rmsnorm_backward", "N64_C1024", rmsnorm_bwd(64, 1024), false, true);
  register_op("add_rmsnorm_forward", "N64_C1024", add_rmsnorm(64, 1024), false, true);
  register_op("rope_forward", "N64_H8_D64", rope(64, 8, 64, false), false, true);
  register_op("rope_backward", "N64_H8_D64", rope(64, 8, 64, true), false, true);
  register_op("swiglu_forward", "N64_F2816", swiglu(64, 2816, false), false, true);
  register_op("swiglu_backward", "N64_F2816", swiglu(64, 2816, true), false, true);
  register_op("embedding_forward", "V32000_C1024_N64", embedding(32000, 1024, 64, false), false, true);
  register_op("embedding_backward", "V32000_C1024_N64", embedding(32000, 1024, 64, true), false, true);
  register_op("add", "1M", residual_add(int64_t{1} << 20), false, true);
  register_op("cast_f32_to_bf16", "1M", cast_to(int64_t{1} << 20, true), false, true);
}

const RegisterOp kRegister(register_memory_bound);

}  // namespace

}  // namespace onn::bench
