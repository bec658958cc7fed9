// Cross-entropy: checks, dispatch, and the chunked LM head built on matmul.
#include "kernels/cross_entropy.h"

#include <algorithm>

#include "kernels/matmul.h"
#include "kernels/op_check.h"

namespace onn {

DType loss_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

void count_valid_labels(Context& ctx, const Tensor& labels, int32_t ignore_index, Tensor& valid) {
  const OpCheck chk("count_valid_labels", ctx, {{"labels", &labels}, {"valid", &valid}});
  chk.require(labels.rank() == 1, "labels must be (N)");
  chk.dtype(labels, "labels", DType::i32);
  chk.shape(valid, "valid", Shape{1});
  chk.require(valid.dtype() == DType::f32 || valid.dtype() == DType::f64, "valid must be F32 or F64");
  ONN_DISPATCH(chk, count_valid_labels_cpu(labels, ignore_index, valid),
               count_valid_labels_cuda(ctx, labels, ignore_index, valid));
}

void cross_entropy_forward_backward(Context& ctx, Tensor& logits, const Tensor& labels, const Tensor& valid,
                                    Tensor& token_loss, const CrossEntropyOptions& opt) {
  const OpCheck chk("cross_entropy_forward_backward", ctx,
                    {{"logits", &logits}, {"labels", &labels}, {"valid", &valid}, {"token_loss", &token_loss}});
  chk.require(logits.rank() == 2 && logits.dim(1) >= 1, "logits must be (N, V)");
  chk.float_dtype(logits, "logits");
  chk.shape(labels, "labels", Shape{logits.dim(0)});
  chk.dtype(labels, "labels", DType::i32);
  chk.shape(valid, "valid", Shape{1});
  chk.dtype(valid, "valid", loss_dtype(logits.dtype()));
  chk.shape(token_loss, "token_loss", Shape{logits.dim(0)});
  chk.dtype(token_loss, "token_loss", loss_dtype(logits.dtype()));
  ONN_DISPATCH(chk, cross_entropy_cpu(logits, labels, valid, token_loss, opt),
               cross_entropy_cuda(ctx, logits, labels, valid, token_loss, opt));
}

void mean_loss(Context& ctx, const Tensor& token_loss, const Tensor& valid, Tensor& loss) {
  const OpCheck chk("mean_loss", ctx, {{"token_loss", &token_loss}, {"valid", &valid}, {"loss", &loss}});
  chk.require(token_loss.rank() == 1, "token_loss must be (N)");
  chk.require(token_loss.dtype() == DType::f32 || token_loss.dtype() == DType::f64, "token_loss must be F32 or F64");
  chk.shape(valid, "valid", Shape{1});
  chk.same_dtype(token_loss, "token_loss", valid, "valid");
  chk.shape(loss, "loss", Shape{1});
  chk.same_dtype(token_loss, "token_loss", loss, "loss");
  ONN_DISPATCH(chk, mean_loss_cpu(token_loss, valid, loss), mean_loss_cuda(ctx, token_loss, valid, loss));
}

void lm_head_cross_entropy(Context& ctx, const Tensor& h, const Tensor& w, const Tensor& labels, Tensor& loss,
                           Tensor* dh, Tensor* dw, const LmHeadLossOptions& opt) {
  const OpCheck chk("lm_head_cross_entropy", ctx,
                    {{"h", &h}, {"w", &w}, {"labels", &labels}, {"loss", &loss}, {"dh", dh}, {"dw", dw}});
  chk.require(h.rank() == 2 && w.rank() == 2 && h.dim(1) == w.dim(1), "h must be (N, C) and w (V, C)");
  chk.float_dtype(h, "h");
  chk.same_dtype(h, "h", w, "w");
  const int64_t n = h.dim(0), v = w.dim(0);
  chk.shape(labels, "labels", Shape{n});
  chk.dtype(labels, "labels", DType::i32);
  chk.shape(loss, "loss", Shape{1});
  chk.dtype(loss, "loss", loss_dtype(h.dtype()));
  chk.require(opt.chunk_tokens >= 1, "chunk_tokens must be positive");
  if (dh) {
    chk.shape(*dh, "dh", h.shape());
    chk.same_dtype(h, "h", *dh, "dh");
  }
  if (dw) {
    chk.shape(*dw, "dw", w.shape());
    chk.require(dw->dtype() == h.dtype() || dw->dtype() == DType::f32, "dw must be h's dtype or F32");
  }
  const DType ld = loss_dtype(h.dtype());
  if (opt.valid) {
    chk.shape(*opt.valid, "valid", Shape{1});
    chk.dtype(*opt.valid, "valid", ld);
  }
  Tensor valid = opt.valid ? *opt.valid : Tensor::empty(Shape{1}, ld, ctx.allocator());
  if (!opt.valid) count_valid_labels(ctx, labels, opt.ignore_index, valid);
  Tensor token_loss = Tensor::empty(Shape{n}, ld, ctx.allocator());
  const int64_t chunk = std::min(opt.chunk_tokens, std::max<int64_t>(n, 1));
  Tensor buffer = Tensor::empty(Shape{chunk, v}, h.dtype(), ctx.allocator());
  CrossEntropyOptions ce;
  ce.ignore_index = opt.ignore_index;
  ce.compute_grad = dh != nullptr || dw != nullptr;
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t e = std::min(n, s + chunk);
    const Tensor hc = h.slice(s, e);
    Tensor logits = buffer.slice(0, e - s);
    MatmulOptions proj;  // (c, C) @ (V, C)^T
    proj.trans_b = true;
    matmul(ctx, hc, w, logits, proj);
    Tensor tl = token_loss.slice(s, e);
    cross_entropy_forward_backward(ctx, logits, labels.slice(s, e), valid, tl, ce);
    if (dh) {
      Tensor dhc = dh->slice(s, e);
      matmul(ctx, logits, w, dhc);  // (c, V) @ (V, C)
    }
    if (dw) {
      MatmulOptions o;  // (c, V)^T @ (c, C)
      o.trans_a = true;
      o.beta = (s > 0 || opt.accumulate_dw) ? 1.0f : 0.0f;
      matmul(ctx, logits, hc, *dw, o);
    }
  }
  if (n == 0 && dw && !opt.accumulate_dw) dw->fill_bytes(0, &ctx.compute());
  mean_loss(ctx, token_loss, valid, loss);
}

}  // namespace onn
