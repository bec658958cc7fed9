// Cross-entropy: checks, dispatch, and the chunked LM head built on matmul.
#include "kernels/backends.h"
#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"
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
  chk.weight_dtype(h, w);
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

namespace {
void check_stats(const OpCheck& chk, int64_t n, DType ld, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  for (const auto& [name, t] : ts) {
    chk.shape(*t, name, Shape{n});
    chk.dtype(*t, name, ld);
  }
}
}  // namespace

void vocab_chunk_stats(Context& ctx, const Tensor& logits, const Tensor& labels, int64_t v0, Tensor& m, Tensor& l,
                       Tensor& target, int32_t ignore_index) {
  const OpCheck chk("vocab_chunk_stats", ctx,
                    {{"logits", &logits}, {"labels", &labels}, {"m", &m}, {"l", &l}, {"target", &target}});
  chk.require(logits.rank() == 2 && logits.dim(1) >= 1, "logits must be (T, G)");
  chk.float_dtype(logits, "logits");
  chk.require(v0 >= 0, "v0 must not be negative");
  chk.shape(labels, "labels", Shape{logits.dim(0)});
  chk.dtype(labels, "labels", DType::i32);
  check_stats(chk, logits.dim(0), loss_dtype(logits.dtype()), {{"m", &m}, {"l", &l}, {"target", &target}});
  ONN_DISPATCH(chk, vocab_chunk_stats_cpu(logits, labels, v0, m, l, target, ignore_index),
               vocab_chunk_stats_cuda(ctx, logits, labels, v0, m, l, target, ignore_index));
}

void vocab_chunk_grad(Context& ctx, Tensor& logits, const Tensor& labels, int64_t v0, const Tensor& m, const Tensor& l,
                      const Tensor& valid, int32_t ignore_index) {
  const OpCheck chk("vocab_chunk_grad", ctx,
                    {{"logits", &logits}, {"labels", &labels}, {"m", &m}, {"l", &l}, {"valid", &valid}});
  chk.require(logits.rank() == 2 && logits.dim(1) >= 1, "logits must be (T, G)");
  chk.float_dtype(logits, "logits");
  chk.require(v0 >= 0, "v0 must not be negative");
  chk.shape(labels, "labels", Shape{logits.dim(0)});
  chk.dtype(labels, "labels", DType::i32);
  const DType ld = loss_dtype(logits.dtype());
  check_stats(chk, logits.dim(0), ld, {{"m", &m}, {"l", &l}});
  chk.shape(valid, "valid", Shape{1});
  chk.dtype(valid, "valid", ld);
  ONN_DISPATCH(chk, vocab_chunk_grad_cpu(logits, labels, v0, m, l, valid, ignore_index),
               vocab_chunk_grad_cuda(ctx, logits, labels, v0, m, l, valid, ignore_index));
}

void vocab_chunk_loss(Context& ctx, const Tensor& labels, const Tensor& m, const Tensor& l, const Tensor& target,
                      Tensor& token_loss, int32_t ignore_index) {
  const OpCheck chk("vocab_chunk_loss", ctx,
                    {{"labels", &labels}, {"m", &m}, {"l", &l}, {"target", &target}, {"token_loss", &token_loss}});
  chk.require(labels.rank() == 1, "labels must be (T)");
  chk.dtype(labels, "labels", DType::i32);
  chk.require(m.dtype() == DType::f32 || m.dtype() == DType::f64, "m must be F32 or F64");
  check_stats(chk, labels.dim(0), m.dtype(), {{"m", &m}, {"l", &l}, {"target", &target}, {"token_loss", &token_loss}});
  ONN_DISPATCH(chk, vocab_chunk_loss_cpu(labels, m, l, target, token_loss, ignore_index),
               vocab_chunk_loss_cuda(ctx, labels, m, l, target, token_loss, ignore_index));
}

SlicedLmHeadLoss::SlicedLmHeadLoss(Context& ctx, const Tensor& h, const Tensor& labels, int64_t vocab,
                                   const Tensor* valid, int64_t chunk_tokens, int64_t granule, int32_t ignore_index)
    : ctx_(ctx), h_(h), labels_(labels), vocab_(vocab), chunk_(chunk_tokens), granule_(granule), ignore_(ignore_index) {
  const OpCheck chk("SlicedLmHeadLoss", ctx, {{"h", &h}, {"labels", &labels}, {"valid", valid}});
  chk.require(h.rank() == 2, "h must be (N, C)");
  chk.float_dtype(h, "h");
  chk.shape(labels, "labels", Shape{h.dim(0)});
  chk.dtype(labels, "labels", DType::i32);
  chk.require(vocab >= 1 && chunk_tokens >= 1 && granule >= 1, "vocab, chunk_tokens and granule must be positive");
  const int64_t n = h.dim(0);
  const DType ld = loss_dtype(h.dtype());
  if (valid) {
    chk.shape(*valid, "valid", Shape{1});
    chk.dtype(*valid, "valid", ld);
    valid_ = *valid;
  } else {
    valid_ = Tensor::empty(Shape{1}, ld, ctx.allocator());
    count_valid_labels(ctx, labels, ignore_index, valid_);
  }
  m_ = Tensor::empty(Shape{n}, ld, ctx.allocator());
  l_ = Tensor::empty(Shape{n}, ld, ctx.allocator());
  target_ = Tensor::empty(Shape{n}, ld, ctx.allocator());
  fill(ctx, m_, -INFINITY);
  l_.fill_bytes(0, &ctx.compute());
  target_.fill_bytes(0xff, &ctx.compute());  // NaN until the label's granule is seen
  chunk_ = std::min(chunk_, std::max<int64_t>(n, 1));
}

// The (token chunk, granule) logits scratch, taken for one slice call and given back after it
// (stream-ordered), so that several losses in turn (a streamed pass's lanes) share one.
Tensor SlicedLmHeadLoss::scratch() const {
  return Tensor::empty(Shape{chunk_ * std::min(granule_, vocab_)}, h_.dtype(), ctx_.allocator());
}

void SlicedLmHeadLoss::check_slice(const char* op, int64_t v0, const Tensor& w) const {
  const OpCheck chk(op, ctx_, {{"w", &w}});
  chk.require(w.rank() == 2 && w.dim(1) == h_.dim(1), "w must be (rows, ", h_.dim(1), ")");
  chk.same_dtype(h_, "h", w, "w");
  const int64_t rows = w.dim(0);
  chk.require(rows >= 1 && v0 % granule_ == 0 && v0 + rows <= vocab_ && (rows % granule_ == 0 || v0 + rows == vocab_),
              "the slice [", v0, ", ", v0 + rows, ") must start on a multiple of the granule ", granule_,
              " and hold whole granules or end the vocabulary of ", vocab_);
}

void SlicedLmHeadLoss::forward_slice(int64_t v0, const Tensor& w) {
  check_slice("SlicedLmHeadLoss::forward_slice", v0, w);
  ONN_CHECK_ARG(v0 == next_v0_, "SlicedLmHeadLoss::forward_slice: expected the slice starting at ", next_v0_,
                ", got ", v0);
  const int64_t n = h_.dim(0), rows = w.dim(0);
  const Tensor buf = scratch();
  for (int64_t s = 0; s < n; s += chunk_) {
    const int64_t e = std::min(n, s + chunk_);
    const Tensor hc = h_.slice(s, e), lab = labels_.slice(s, e);
    Tensor m = m_.slice(s, e), l = l_.slice(s, e), t = target_.slice(s, e);
    for (int64_t g0 = 0; g0 < rows; g0 += granule_) {
      const int64_t g1 = std::min(rows, g0 + granule_);
      Tensor logits = buf.slice(0, (e - s) * (g1 - g0)).reshape(Shape{e - s, g1 - g0});
      MatmulOptions proj;
      proj.trans_b = true;
      matmul(ctx_, hc, w.slice(g0, g1), logits, proj);
      vocab_chunk_stats(ctx_, logits, lab, v0 + g0, m, l, t, ignore_);
    }
  }
  next_v0_ = v0 + rows;
}

void SlicedLmHeadLoss::finish(Tensor& loss) {
  ONN_CHECK_ARG(next_v0_ == vocab_, "SlicedLmHeadLoss::finish: the forward saw ", next_v0_, " of ", vocab_,
                " vocabulary rows");
  Tensor token_loss = Tensor::empty(Shape{h_.dim(0)}, m_.dtype(), ctx_.allocator());
  vocab_chunk_loss(ctx_, labels_, m_, l_, target_, token_loss, ignore_);
  mean_loss(ctx_, token_loss, valid_, loss);
  back_end_ = vocab_;
}

void SlicedLmHeadLoss::backward_slice(int64_t v0, const Tensor& w, Tensor& dh) {
  check_slice("SlicedLmHeadLoss::backward_slice", v0, w);
  ONN_CHECK_ARG(back_end_ >= 0, "SlicedLmHeadLoss::backward_slice before finish");
  ONN_CHECK_ARG(v0 + w.dim(0) == back_end_, "SlicedLmHeadLoss::backward_slice: expected the slice ending at ",
                back_end_, ", got [", v0, ", ", v0 + w.dim(0), ")");
  ONN_CHECK_ARG(dh.shape() == h_.shape() && dh.dtype() == h_.dtype(), "SlicedLmHeadLoss::backward_slice: dh must be ",
                h_.shape().str(), " ", dtype_name(h_.dtype()));
  const int64_t n = h_.dim(0), rows = w.dim(0);
  // Granules in descending order over the whole vocabulary: the last one writes dh.
  const int64_t last_g0 = ((rows - 1) / granule_) * granule_;
  const Tensor buf = scratch();
  for (int64_t s = 0; s < n; s += chunk_) {
    const int64_t e = std::min(n, s + chunk_);
    const Tensor hc = h_.slice(s, e), lab = labels_.slice(s, e);
    Tensor dhc = dh.slice(s, e);
    for (int64_t g0 = last_g0; g0 >= 0; g0 -= granule_) {
      const int64_t g1 = std::min(rows, g0 + granule_);
      Tensor logits = buf.slice(0, (e - s) * (g1 - g0)).reshape(Shape{e - s, g1 - g0});
      MatmulOptions proj;
      proj.trans_b = true;
      const Tensor wg = w.slice(g0, g1);
      matmul(ctx_, hc, wg, logits, proj);
      vocab_chunk_grad(ctx_, logits, lab, v0 + g0, m_.slice(s, e), l_.slice(s, e), valid_, ignore_);
      MatmulOptions back;  // (t, G) @ (G, C)
      back.beta = (v0 + g1 == vocab_) ? 0.0f : 1.0f;
      matmul(ctx_, logits, wg, dhc, back);
    }
  }
  back_end_ = v0;
}

}  // namespace onn
