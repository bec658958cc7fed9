// Linear, LoRA, cross-entropy (alone and fused with the LM head), AdamW, the gradient norm
// and argmax: FLOP/s for the GEMM-based ops, bytes/s for the rest.
#include "bench_util.h"
#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/linear.h"
#include "kernels/lora.h"
#include "kernels/sampling.h"

namespace onn::bench {

namespace {

double sz(DType t) { return static_cast<double>(dtype_size(t)); }

OpSetup linear(int64_t n, int64_t in, int64_t out, bool backward) {
  return [=](Context& ctx, DType t) {
    Tensor x = random_on(ctx, Shape{n, in}, t), w = random_on(ctx, Shape{out, in}, t, 0.05, 3);
    Tensor y = Tensor::empty(Shape{n, out}, t, ctx.allocator());
    const double f = 2.0 * n * in * out;
    if (!backward) return OpRun{[=, &ctx]() mutable { linear_forward(ctx, x, w, nullptr, y); }, 0, f};
    Tensor dx = Tensor::empty(Shape{n, in}, t, ctx.allocator()), dw = Tensor::empty(Shape{out, in}, DType::f32, ctx.allocator());
    return OpRun{[=, &ctx]() mutable {
                   LinearGrads g;
                   g.dx = &dx;
                   g.dw = &dw;
                   linear_backward(ctx, x, w, y, g);
                 },
                 0, 2 * f};
  };
}

OpSetup lora(int64_t n, int64_t in, int64_t out, int64_t r, bool backward) {
  return [=](Context& ctx, DType t) {
    Tensor x = random_on(ctx, Shape{n, in}, t), w = random_on(ctx, Shape{out, in}, t, 0.05, 3);
    Tensor a = random_on(ctx, Shape{r, in}, t, 0.05, 4), b = random_on(ctx, Shape{out, r}, t, 0.05, 5);
    Tensor y = Tensor::empty(Shape{n, out}, t, ctx.allocator()), xa = Tensor::empty(Shape{n, r}, t, ctx.allocator());
    const LoraConfig cfg{2.0f, 0.0f, 1};
    const double base = 2.0 * n * in * out, extra = 2.0 * n * r * (in + out);
    if (!backward) return OpRun{[=, &ctx]() mutable { lora_forward(ctx, x, w, nullptr, a, b, cfg, y, xa); }, 0, base + extra};
    Tensor dx = Tensor::empty(Shape{n, in}, t, ctx.allocator()), da = Tensor::empty(Shape{r, in}, DType::f32, ctx.allocator()),
           db = Tensor::empty(Shape{out, r}, DType::f32, ctx.allocator());
    return OpRun{[=, &ctx]() mutable {
                   LoraGrads g;
                   g.dx = &dx;
                   g.da = &da;
                   g.db = &db;
                   lora_backward(ctx, x, w, a, b, xa, y, cfg, g);
                 },
                 0, base + 2 * extra};
  };
}

OpSetup cross_entropy(int64_t n, int64_t v) {
  return [=](Context& ctx, DType t) {
    Tensor logits = random_on(ctx, Shape{n, v}, t, 8), labels = random_ids(ctx, n, v);
    Tensor valid = Tensor::empty(Shape{1}, DType::f32, ctx.allocator()), tl = Tensor::empty(Shape{n}, DType::f32, ctx.allocator());
    count_valid_labels(ctx, labels, kIgnoreIndex, valid);
    // Gradients overwrite the logits: later runs see gradients as logits, which costs the
    // same. Traffic: the row read once and written once.
    return OpRun{[=, &ctx]() mutable { cross_entropy_forward_backward(ctx, logits, labels, valid, tl); },
                 2.0 * n * v * sz(t)};
  };
}

OpSetup lm_head(int64_t n, int64_t c, int64_t v) {
  return [=](Context& ctx, DType t) {
    Tensor h = random_on(ctx, Shape{n, c}, t), w = random_on(ctx, Shape{v, c}, t, 0.05, 3), labels = random_ids(ctx, n, v);
    Tensor loss = Tensor::empty(Shape{1}, DType::f32, ctx.allocator()), dh = Tensor::empty(Shape{n, c}, t, ctx.allocator());
    return OpRun{[=, &ctx]() mutable { lm_head_cross_entropy(ctx, h, w, labels, loss, &dh, nullptr); }, 0,
                 4.0 * n * c * v};
  };
}

OpSetup adamw(int64_t n) {
  return [=](Context& ctx, DType t) {
    Tensor p = random_on(ctx, Shape{n}, DType::f32), g = random_on(ctx, Shape{n}, t, 1, 3);
    Tensor m = Tensor::zeros(Shape{n}, DType::f32, ctx.device()), v = Tensor::zeros(Shape{n}, DType::f32, ctx.device());
    Tensor copy = Tensor::empty(Shape{n}, DType::bf16, ctx.allocator());
    AdamWConfig cfg;
    return OpRun{[=, &ctx]() mutable { adamw_step(ctx, p, g, m, v, cfg, &copy); }, n * (4.0 * 6 + sz(t) + 2.0)};
  };
}

OpSetup grad_norm(int64_t n) {
  return [=](Context& ctx, DType t) {
    Tensor g = random_on(ctx, Shape{n}, t);
    return OpRun{[=, &ctx]() { benchmark::DoNotOptimize(global_grad_norm(ctx, {&g})); }, n * sz(t)};
  };
}

OpSetup argmax(int64_t n, int64_t v) {
  return [=](Context& ctx, DType t) {
    Tensor logits = random_on(ctx, Shape{n, v}, t), out = Tensor::empty(Shape{n}, DType::i32, ctx.allocator());
    return OpRun{[=, &ctx]() mutable { argmax_rows(ctx, logits, out); }, n * v * sz(t)};
  };
}

void register_training(bool cuda) {
  const int64_t n = kBatchTokens;
  for (const ModelShape& m : {kLlama3_8B, kTinyLlama}) {
    const std::string s = std::string(m.name) + "_N4096";
    register_op("linear_forward", s + "_down", linear(n, m.f, m.c, false), cuda, false);
    register_op("linear_backward", s + "_down", linear(n, m.f, m.c, true), cuda, false);
    register_op("lora_forward", s + "_q_r16", lora(n, m.c, m.h * m.d, 16, false), cuda, false);
    register_op("lora_backward", s + "_q_r16", lora(n, m.c, m.h * m.d, 16, true), cuda, false);
    register_op("cross_entropy", std::string(m.name) + "_N2048", cross_entropy(2048, m.v), cuda, false);
    register_op("lm_head_cross_entropy", s, lm_head(n, m.c, m.v), cuda, false, false);
    register_op("argmax_rows", std::string(m.name) + "_N8", argmax(8, m.v), cuda, false);
  }
  register_op("adamw_step", "64M_params", adamw(int64_t{64} << 20), cuda, false);
  register_op("global_grad_norm", "64M_params", grad_norm(int64_t{64} << 20), cuda, false);
  register_op("linear_forward", "N64_256x512", linear(64, 256, 512, false), false, true);
  register_op("linear_backward", "N64_256x512", linear(64, 256, 512, true), false, true);
  register_op("lora_forward", "N64_256x512_r8", lora(64, 256, 512, 8, false), false, true);
  register_op("lora_backward", "N64_256x512_r8", lora(64, 256, 512, 8, true), false, true);
  register_op("cross_entropy", "N64_V32000", cross_entropy(64, 32000), false, true);
  register_op("lm_head_cross_entropy", "N64_C256_V32000", lm_head(64, 256, 32000), false, true);
  register_op("adamw_step", "1M_params", adamw(int64_t{1} << 20), false, true);
  register_op("global_grad_norm", "1M_params", grad_norm(int64_t{1} << 20), false, true);
  register_op("argmax_rows", "N8_V32000", argmax(8, 32000), false, true);
}

const RegisterOp kRegister(register_training);

}  // namespace

}  // namespace onn::bench
