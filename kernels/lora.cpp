// LoRA: checks, then matmul and dropout calls (both backends).
#include "kernels/lora.h"

#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/op_check.h"

namespace onn {

namespace {
void check_common(const OpCheck& chk, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b,
                  const Tensor& xa, const LoraConfig& cfg) {
  chk.require(x.rank() == 2 && w.rank() == 2 && x.dim(1) == w.dim(1), "x must be (N, in) and w (out, in)");
  chk.require(a.rank() == 2 && a.dim(1) == x.dim(1) && a.dim(0) >= 1, "a must be (R, in)");
  const int64_t n = x.dim(0), out = w.dim(0), r = a.dim(0);
  chk.shape(b, "b", Shape{out, r});
  chk.shape(xa, "xa", Shape{n, r});
  chk.float_dtype(x, "x");
  chk.weight_dtype(x, w);
  for (const auto& [t, name] : {std::pair{&a, "a"}, {&b, "b"}, {&xa, "xa"}}) chk.same_dtype(x, "x", *t, name);
  chk.require(cfg.dropout >= 0.0f && cfg.dropout < 1.0f, "dropout must be in [0, 1), got ", cfg.dropout);
}

// drop(x) with cfg's mask, or x itself when there is no dropout.
Tensor dropped_input(Context& ctx, const Tensor& x, const LoraConfig& cfg) {
  if (cfg.dropout == 0.0f) return x;
  Tensor xd = Tensor::empty(x.shape(), x.dtype(), ctx.allocator());
  dropout(ctx, x, cfg.dropout, cfg.seed, xd);
  return xd;
}
}  // namespace

void lora_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& a,
                  const Tensor& b, const LoraConfig& cfg, Tensor& y, Tensor& xa) {
  const OpCheck chk("lora_forward", ctx,
                    {{"x", &x}, {"w", &w}, {"bias", bias}, {"a", &a}, {"b", &b}, {"y", &y}, {"xa", &xa}});
  check_common(chk, x, w, a, b, xa, cfg);
  chk.shape(y, "y", Shape{x.dim(0), w.dim(0)});
  chk.same_dtype(x, "x", y, "y");
  if (bias) {
    chk.shape(*bias, "bias", Shape{w.dim(0)});
    chk.same_dtype(x, "x", *bias, "bias");
  }
  MatmulOptions base;  // y = x W^T + bias
  base.trans_b = true;
  base.bias = bias;
  matmul(ctx, x, w, y, base);
  MatmulOptions down;  // xa = drop(x) A^T
  down.trans_b = true;
  matmul(ctx, dropped_input(ctx, x, cfg), a, xa, down);
  MatmulOptions up;  // y += scale * xa B^T
  up.trans_b = true;
  up.alpha = cfg.scale;
  up.beta = 1.0f;
  matmul(ctx, xa, b, y, up);
}

void lora_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b,
                   const Tensor& xa, const Tensor& dy, const LoraConfig& cfg, const LoraGrads& g) {
  const OpCheck chk("lora_backward", ctx,
                    {{"x", &x},
                     {"w", &w},
                     {"a", &a},
                     {"b", &b},
                     {"xa", &xa},
                     {"dy", &dy},
                     {"dx", g.dx},
                     {"da", g.da},
                     {"db", g.db}});
  check_common(chk, x, w, a, b, xa, cfg);
  const int64_t n = x.dim(0), out = w.dim(0), r = a.dim(0);
  chk.shape(dy, "dy", Shape{n, out});
  chk.same_dtype(x, "x", dy, "dy");
  chk.require(g.da != nullptr && g.db != nullptr, "da and db are required");
  chk.shape(*g.da, "da", a.shape());
  chk.shape(*g.db, "db", b.shape());
  chk.require(g.da->dtype() == x.dtype() || g.da->dtype() == DType::f32, "da must be x's dtype or F32");
  chk.same_dtype(*g.da, "da", *g.db, "db");
  if (g.dx) {
    chk.shape(*g.dx, "dx", x.shape());
    chk.same_dtype(x, "x", *g.dx, "dx");
  }
  const float acc = g.accumulate_ab ? 1.0f : 0.0f;
  MatmulOptions o_db;  // dB = scale * dy^T xa: (out, N) @ (N, R)
  o_db.trans_a = true;
  o_db.alpha = cfg.scale;
  o_db.beta = acc;
  matmul(ctx, dy, xa, *g.db, o_db);
  Tensor dxa = Tensor::empty(Shape{n, r}, x.dtype(), ctx.allocator());
  MatmulOptions o_dxa;  // dxa = scale * dy B: (N, out) @ (out, R)
  o_dxa.alpha = cfg.scale;
  matmul(ctx, dy, b, dxa, o_dxa);
  MatmulOptions o_da;  // dA = dxa^T drop(x): (R, N) @ (N, in)
  o_da.trans_a = true;
  o_da.beta = acc;
  matmul(ctx, dxa, dropped_input(ctx, x, cfg), *g.da, o_da);
  if (g.dx) {
    MatmulOptions o_base;  // dx = dy W: (N, out) @ (out, in)
    o_base.beta = g.accumulate_dx ? 1.0f : 0.0f;
    matmul(ctx, dy, w, *g.dx, o_base);
    MatmulOptions o_lora;  // + drop'(dxa A): (N, R) @ (R, in)
    if (cfg.dropout == 0.0f) {
      o_lora.beta = 1.0f;
      matmul(ctx, dxa, a, *g.dx, o_lora);
    } else {
      Tensor t = Tensor::empty(x.shape(), x.dtype(), ctx.allocator());
      matmul(ctx, dxa, a, t, o_lora);
      dropout(ctx, t, cfg.dropout, cfg.seed, t);
      add(ctx, *g.dx, t, *g.dx);
    }
  }
}

}  // namespace onn
