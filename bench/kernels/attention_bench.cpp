// Causal attention forward, forward + backward and decode at Llama-3-8B and TinyLlama shapes.
// FLOPs count the causal half of the score matrix, flash-attention style: forward
// 2 * 2 * B * H * T^2 * D / 2, backward 2.5 times that. Decode is memory bound: it reads the
// KV cache once.
#include <cmath>

#include "bench_util.h"
#include "kernels/attention.h"

namespace onn::bench {

namespace {

double causal_fwd_flops(int64_t b, int64_t h, int64_t t, int64_t d) {
  return 4.0 * static_cast<double>(b) * h * static_cast<double>(t) * t * d / 2.0;
}

OpSetup attention(int64_t b, int64_t t, int64_t h, int64_t kvh, int64_t d, bool backward) {
  return [=](Context& ctx, DType dt) {
    const int64_t n = b * t;
    const AttentionSeqs seqs = uniform_seqs(ctx, b, t);
    Tensor q = random_on(ctx, Shape{n, h, d}, dt), k = random_on(ctx, Shape{n, kvh, d}, dt, 1, 3),
           v = random_on(ctx, Shape{n, kvh, d}, dt, 1, 4);
    Tensor o = Tensor::empty(Shape{n, h, d}, dt, ctx.allocator()), lse = Tensor::empty(Shape{n, h}, DType::f32, ctx.allocator());
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    const double f = causal_fwd_flops(b, h, t, d);
    if (!backward) return OpRun{[=, &ctx]() mutable { attention_forward(ctx, q, k, v, seqs, scale, o, lse); }, 0, f};
    Tensor g = random_on(ctx, Shape{n, h, d}, dt, 1, 5), dq = Tensor::empty(Shape{n, h, d}, dt, ctx.allocator());
    Tensor dk = Tensor::empty(Shape{n, kvh, d}, dt, ctx.allocator()), dv = Tensor::empty(Shape{n, kvh, d}, dt, ctx.allocator());
    return OpRun{[=, &ctx]() mutable {
                   attention_forward(ctx, q, k, v, seqs, scale, o, lse);
                   attention_backward(ctx, q, k, v, o, lse, g, seqs, scale, dq, dk, dv);
                 },
                 0, 3.5 * f};
  };
}

OpSetup decode(int64_t b, int64_t ctx_len, int64_t h, int64_t kvh, int64_t d) {
  return [=](Context& ctx, DType dt) {
    Tensor q = random_on(ctx, Shape{b, 1, h, d}, dt), kc = random_on(ctx, Shape{b, ctx_len, kvh, d}, dt, 1, 3),
           vc = random_on(ctx, Shape{b, ctx_len, kvh, d}, dt, 1, 4), o = Tensor::empty(Shape{b, 1, h, d}, dt, ctx.allocator());
    Tensor lens_host = Tensor::empty(Shape{b}, DType::i32);
    for (int64_t i = 0; i < b; ++i) lens_host.data_as<int32_t>()[i] = static_cast<int32_t>(ctx_len);
    Tensor lens = lens_host.to(ctx.device());
    const double bytes = 2.0 * b * ctx_len * kvh * d * static_cast<double>(dtype_size(dt));
    return OpRun{[=, &ctx]() mutable { attention_decode(ctx, q, kc, vc, lens, 0.088f, o); }, bytes};
  };
}

void register_attention(bool cuda) {
  for (const ModelShape& m : {kLlama3_8B, kTinyLlama}) {
    for (int64_t t : {2048, 4096}) {
      const std::string s = std::string(m.name) + "_B" + std::to_string(kBatchTokens / t) + "_T" + std::to_string(t);
      register_op("attention_forward", s, attention(kBatchTokens / t, t, m.h, m.kvh, m.d, false), cuda, false);
      register_op("attention_forward_backward", s, attention(kBatchTokens / t, t, m.h, m.kvh, m.d, true), cuda, false);
    }
    register_op("attention_decode", std::string(m.name) + "_B1_ctx4096", decode(1, 4096, m.h, m.kvh, m.d), cuda, false);
    register_op("attention_decode", std::string(m.name) + "_B8_ctx4096", decode(8, 4096, m.h, m.kvh, m.d), cuda, false);
  }
  register_op("attention_forward", "B1_T128_H8_KVH2_D64", attention(1, 128, 8, 2, 64, false), false, true);
  register_op("attention_forward_backward", "B1_T128_H8_KVH2_D64", attention(1, 128, 8, 2, 64, true), false, true);
  register_op("attention_decode", "B1_ctx512_H8_KVH2_D64", decode(1, 512, 8, 2, 64), false, true);
}

const RegisterOp kRegister(register_attention);

}  // namespace

}  // namespace onn::bench
