// The layer loop over a weight feed (model/stack.h): forward, loss, backward, for one lane or a
// group of them.
#include "model/stack.h"

#include <algorithm>
#include <memory>

#include "kernels/cross_entropy.h"
#include "kernels/defaults.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/rmsnorm.h"
#include "model/streaming.h"
#include "runtime/error.h"

namespace onn {

ResidentWeights::ResidentWeights(const LlamaModel& model) : model_(model) {
  ONN_CHECK_ARG(!model.on_host(), "model forward: the weights are in host memory (loaded for layer streaming) and "
                "no stream is given");
}

int64_t ResidentWeights::layers_per_chunk() const { return std::max<int64_t>(1, model_.config().num_hidden_layers); }

int64_t ResidentWeights::layer_chunks() const { return model_.config().num_hidden_layers > 0 ? 1 : 0; }

const std::vector<LayerWeights>& ResidentWeights::acquire_layers(int64_t c) {
  ONN_ASSERT(c == 0);
  return model_.weights().layers;
}

Tensor ResidentWeights::acquire_head(int64_t s, int64_t* v0) {
  ONN_ASSERT(s == 0);
  *v0 = 0;
  return model_.weights().lm_head;
}

void ResidentWeights::embed(Context& ctx, const Tensor& ids, const Tensor&, Tensor& x) {
  embedding_forward(ctx, model_.weights().embed, ids, x);
}

namespace {

enum class Mode { hidden, loss, train };

// One pass over the blocks for every lane: each phase below walks the lanes in order, so a
// gradient receives lane 0's contribution, then lane 1's, ... The layer inputs the backward
// needs are kept (on the device, or offloaded by the feed); with recomputation every layer's
// internals are rebuilt in the backward from them.
class StackPass {
 public:
  StackPass(Context& ctx, const LlamaModel& model, WeightFeed& feed, const std::vector<Lane>& lanes, Gradients* grads,
            const StackOptions& opt, Mode mode);

  // The blocks alone: each lane's final-norm hidden states.
  std::vector<Tensor> hidden();
  // With the loss: each lane's, after the backward when the pass trains.
  std::vector<double> loss();

 private:
  struct LaneState {
    LaneState(Block b, size_t layers, bool keep_internals)
        : block(std::move(b)), xs(layers + 1), acts(keep_internals ? layers : 0),
          back(static_cast<int64_t>(layers) - 1) {}
    Block block;
    std::vector<Tensor> xs;      // layer inputs, then the last layer's output: (N, C) each
    std::vector<BlockActs> acts;  // per layer, when the internals are kept for the backward
    Tensor hf, rstd;             // (N, C), (N): the final norm
    Tensor loss, valid;          // (1) each, loss_dtype
    Tensor dh, dx;               // (N, C): the head's input gradient, the residual gradient
    std::unique_ptr<SlicedLmHeadLoss> head;
    int64_t back = 0;            // offload: the highest layer input not yet asked back
  };

  bool keep(size_t l) const { return train_ && l >= lowest_ && l < L_; }
  bool offloaded(size_t l) const { return off_ && keep(l) && l < L_ - on_device_; }
  void forward();
  void embed();
  void forward_layers();
  void final_norm();
  void head_forward();
  void head_backward();
  void bring_back_from(size_t m, int64_t from);
  void backward_layers();
  std::vector<double> finish();

  Context& ctx_;
  const LlamaModel& model_;
  const ModelConfig& c_;
  WeightFeed& feed_;
  const std::vector<Lane>& in_;
  Gradients* grads_;
  std::vector<LaneState> lanes_;
  size_t L_ = 0, lowest_ = 0, on_device_ = 0;
  bool train_ = false, keep_internals_ = false, sliced_ = false;
  int64_t granule_ = 0;
  ActivationOffload* off_ = nullptr;
  std::function<void(int64_t)> on_layer_gradients_;
  Tensor weight_scratch_;  // every lane's blocks dequantize a quantized base's projections here
};

StackPass::StackPass(Context& ctx, const LlamaModel& model, WeightFeed& feed, const std::vector<Lane>& lanes,
                     Gradients* grads, const StackOptions& opt, Mode mode)
    : ctx_(ctx), model_(model), c_(model.config()), feed_(feed), in_(lanes), grads_(grads) {
  ONN_ASSERT(!lanes.empty());
  L_ = static_cast<size_t>(c_.num_hidden_layers);
  // The lowest layer whose backward produces a gradient: LoRA stops there.
  lowest_ = mode == Mode::train && grads->full ? 0 : L_;
  if (mode == Mode::train && !grads->full)
    for (const LoraModule& m : grads->lora.modules) lowest_ = std::min(lowest_, static_cast<size_t>(m.layer));
  train_ = mode == Mode::train && lowest_ < L_;
  keep_internals_ = train_ && !opt.recompute;
  granule_ = feed.head_granule() > 0 ? feed.head_granule() : opt.head_granule;
  sliced_ = granule_ > 0 && !(grads && grads->full);
  off_ = train_ ? feed.offload() : nullptr;
  on_layer_gradients_ = opt.on_layer_gradients;
  if (off_) on_device_ = static_cast<size_t>(std::min<int64_t>(off_->layers_on_device(), static_cast<int64_t>(L_)));
  for (const Lane& lane : lanes)
    lanes_.emplace_back(Block(ctx, model, lane.ids->dim(0), lane.block, weight_scratch_), L_, keep_internals_);
  feed.plan_pass(train_ ? static_cast<int64_t>(lowest_) : -1);
  if (off_) {
    int64_t rows = 0;
    for (const LaneState& s : lanes_) rows = std::max(rows, s.block.rows());
    off_->reserve(ctx, lanes_.size(), static_cast<size_t>(rows * c_.hidden_size) * dtype_size(model.dtype()));
  }
}

void StackPass::embed() {
  for (size_t m = 0; m < lanes_.size(); ++m) {
    LaneState& s = lanes_[m];
    s.xs[0] = s.block.make(Shape{s.block.rows(), c_.hidden_size});
    feed_.embed(ctx_, *in_[m].ids, in_[m].host_ids, s.xs[0]);
    if (offloaded(0)) off_->offload(ctx_, m, 0, s.xs[0]);
  }
}

// The forward layer loop. With offload, layer inputs the backward needs go to host memory as
// soon as they exist and leave the device once the next layer has read them; the top
// layers_on_device of them stay on the device.
void StackPass::forward_layers() {
  BlockActs shared;  // without a backward, one set of internals serves every layer and lane
  const size_t k = static_cast<size_t>(feed_.layers_per_chunk());
  for (int64_t ch = 0; ch < feed_.layer_chunks(); ++ch) {
    const std::vector<LayerWeights>& ws = feed_.acquire_layers(ch);
    for (size_t i = 0; i < ws.size(); ++i) {
      const size_t l = static_cast<size_t>(ch) * k + i;
      for (size_t m = 0; m < lanes_.size(); ++m) {
        LaneState& s = lanes_[m];
        BlockActs fresh;  // training recomputes: these internals are dropped after the layer
        BlockActs& a = keep_internals_ ? s.acts[l] : train_ ? fresh : shared;
        s.xs[l + 1] = s.block.make(Shape{s.block.rows(), c_.hidden_size});
        s.block.forward(l, ws[i], s.xs[l], a, s.xs[l + 1]);
        if (offloaded(l + 1)) off_->offload(ctx_, m, l + 1, s.xs[l + 1]);
        if (!keep(l)) {
          s.xs[l] = Tensor();
        } else if (offloaded(l)) {
          off_->retire(ctx_, m, l);  // its copy out is done before the memory is reused
          s.xs[l] = Tensor();
        }
      }
    }
    feed_.release();
  }
}

void StackPass::final_norm() {
  for (LaneState& s : lanes_) {
    s.hf = s.block.make(Shape{s.block.rows(), c_.hidden_size});
    s.rstd = s.block.stat(Shape{s.block.rows()});
    rmsnorm_forward(ctx_, s.xs[L_], feed_.norm(), static_cast<float>(c_.rms_norm_eps), s.hf, s.rstd);
    if (!train_) s.xs[L_] = Tensor();
  }
}

// Each lane's loss; training through the fused head also gets dh (and the head's gradient).
void StackPass::head_forward() {
  for (size_t m = 0; m < lanes_.size(); ++m) {
    LaneState& s = lanes_[m];
    s.loss = Tensor::empty(Shape{1}, loss_dtype(model_.dtype()), ctx_.allocator());
    if (in_[m].loss_tokens > 0) {
      s.valid = Tensor::empty(Shape{1}, loss_dtype(model_.dtype()), ctx_.allocator());
      fill(ctx_, s.valid, static_cast<float>(in_[m].loss_tokens));
    }
    if (sliced_)
      s.head = std::make_unique<SlicedLmHeadLoss>(ctx_, s.hf, *in_[m].labels, c_.vocab_size,
                                                  s.valid.defined() ? &s.valid : nullptr, kLmHeadChunkTokens, granule_);
  }
  if (sliced_) {
    for (int64_t slice = 0; slice < feed_.head_slices(); ++slice) {
      int64_t v0 = 0;
      const Tensor w = feed_.acquire_head(slice, &v0);
      for (LaneState& s : lanes_) s.head->forward_slice(v0, w);
      feed_.release();
    }
    for (LaneState& s : lanes_) s.head->finish(s.loss);
    return;
  }
  int64_t v0 = 0;
  const Tensor w = feed_.acquire_head(0, &v0);  // the fused head: one slice, the whole vocabulary
  Tensor* dhead = train_ && grads_->full ? &grads_->full->lm_head : nullptr;
  for (size_t m = 0; m < lanes_.size(); ++m) {
    LaneState& s = lanes_[m];
    LmHeadLossOptions lo;
    lo.accumulate_dw = true;
    lo.valid = s.valid.defined() ? &s.valid : nullptr;
    if (train_) s.dh = s.block.make(Shape{s.block.rows(), c_.hidden_size});
    lm_head_cross_entropy(ctx_, s.hf, w, *in_[m].labels, s.loss, train_ ? &s.dh : nullptr, dhead, lo);
  }
  feed_.release();
}

// The sliced head's backward (the fused head did its own), then the final norm's: only each
// lane's residual gradient carries on.
void StackPass::head_backward() {
  if (sliced_) {
    for (LaneState& s : lanes_) s.dh = s.block.make(Shape{s.block.rows(), c_.hidden_size});
    for (int64_t slice = feed_.head_slices(); slice-- > 0;) {
      int64_t v0 = 0;
      const Tensor w = feed_.acquire_head(slice, &v0);
      for (LaneState& s : lanes_) s.head->backward_slice(v0, w, s.dh);
      feed_.release();
    }
  }
  Tensor* dnorm = grads_->full ? &grads_->full->norm : nullptr;
  for (LaneState& s : lanes_) {
    s.dx = s.block.make(Shape{s.block.rows(), c_.hidden_size});
    s.dx.fill_bytes(0, &ctx_.compute());
    s.block.norm_backward(s.xs[L_], feed_.norm(), s.rstd, s.dh, s.dx, dnorm);
    s.xs[L_] = Tensor();
    s.dh = Tensor();
    s.head.reset();
    s.hf = Tensor();
    s.rstd = Tensor();
  }
}

// Offloaded layer inputs come back ahead of their layer: two layers ahead with one lane (a
// copy queued behind a weight chunk on the same copy engine still arrives in time), one with
// several (the other lanes' work on the layer comes first).
void StackPass::bring_back_from(size_t m, int64_t from) {
  LaneState& s = lanes_[m];
  for (; s.back >= static_cast<int64_t>(lowest_) && s.back >= from; --s.back) {
    const size_t l = static_cast<size_t>(s.back);
    if (offloaded(l)) s.xs[l] = off_->bring_back(ctx_, m, l, Shape{s.block.rows(), c_.hidden_size});
  }
}

// The backward layer loop, from the top down to the lowest trained layer.
void StackPass::backward_layers() {
  const int64_t ahead = lanes_.size() == 1 ? 2 : 1;
  if (off_)
    for (size_t m = 0; m < lanes_.size(); ++m) bring_back_from(m, static_cast<int64_t>(L_) - ahead);
  const int64_t k = feed_.layers_per_chunk();
  const bool full = grads_->full.has_value();
  for (int64_t ch = feed_.layer_chunks(); ch-- > static_cast<int64_t>(lowest_) / k;) {
    const std::vector<LayerWeights>& ws = feed_.acquire_layers(ch);
    for (size_t i = ws.size(); i-- > 0;) {
      const size_t l = static_cast<size_t>(ch * k) + i;
      if (l < lowest_) break;
      for (size_t m = 0; m < lanes_.size(); ++m) {
        LaneState& s = lanes_[m];
        if (off_) {  // this layer's input is on the device or (being) copied back; start the next
          if (offloaded(l)) off_->await_back(ctx_, m, l);
          bring_back_from(m, static_cast<int64_t>(l) - ahead);
        }
        BlockActs recomputed;
        if (!keep_internals_) {
          Tensor scratch_out = s.block.make(Shape{s.block.rows(), c_.hidden_size});
          s.block.forward(l, ws[i], s.xs[l], recomputed, scratch_out);
        }
        s.block.backward(l, ws[i], s.xs[l], keep_internals_ ? s.acts[l] : recomputed, s.dx, l > lowest_ || full,
                         *grads_);
        s.xs[l] = Tensor();
        if (keep_internals_) s.acts[l] = BlockActs();  // free as we go
      }
      if (on_layer_gradients_) on_layer_gradients_(static_cast<int64_t>(l));
    }
    feed_.release();
  }
  if (full)
    for (size_t m = 0; m < lanes_.size(); ++m) embedding_backward(ctx_, *in_[m].ids, lanes_[m].dx, grads_->full->embed);
}

// Each lane's loss to the caller: into its loss_out without waiting, or read back.
std::vector<double> StackPass::finish() {
  std::vector<double> out;
  for (size_t m = 0; m < lanes_.size(); ++m) {
    if (in_[m].loss_out) {
      in_[m].loss_out->copy_from(lanes_[m].loss, &ctx_.compute());
      out.push_back(std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    ctx_.synchronize();
    const Tensor host = lanes_[m].loss.to(Device::cpu());
    out.push_back(load_as_double(host.data(), host.dtype(), 0));
  }
  return out;
}

void StackPass::forward() {
  embed();
  forward_layers();
  final_norm();
}

std::vector<Tensor> StackPass::hidden() {
  forward();
  std::vector<Tensor> h;
  for (LaneState& s : lanes_) h.push_back(std::move(s.hf));
  return h;
}

std::vector<double> StackPass::loss() {
  forward();
  head_forward();
  if (train_) {
    head_backward();
    backward_layers();
  }
  return finish();
}

}  // namespace

std::vector<Tensor> stack_hidden(Context& ctx, const LlamaModel& model, WeightFeed& feed,
                                 const std::vector<Lane>& lanes) {
  return StackPass(ctx, model, feed, lanes, nullptr, {}, Mode::hidden).hidden();
}

std::vector<double> stack_loss(Context& ctx, const LlamaModel& model, WeightFeed& feed, const std::vector<Lane>& lanes,
                               const StackOptions& opt) {
  return StackPass(ctx, model, feed, lanes, nullptr, opt, Mode::loss).loss();
}

std::vector<double> stack_train(Context& ctx, const LlamaModel& model, WeightFeed& feed, const std::vector<Lane>& lanes,
                                Gradients& grads, const StackOptions& opt) {
  return StackPass(ctx, model, feed, lanes, &grads, opt, Mode::train).loss();
}

Tensor stack_logits(Context& ctx, const LlamaModel& model, WeightFeed& feed, const Tensor& h) {
  const int64_t V = model.config().vocab_size;
  const DType dt = model.dtype();
  Tensor out = Tensor::empty(Shape{h.dim(0), V}, dt, ctx.allocator());
  for (int64_t slice = 0; slice < feed.head_slices(); ++slice) {
    int64_t v0 = 0;
    const Tensor w = feed.acquire_head(slice, &v0);
    const int64_t rows = w.dim(0);
    if (rows == V) {
      linear_forward(ctx, h, w, nullptr, out);
    } else {  // a slice gives columns [v0, v0 + rows) of every row
      for (int64_t b = 0; b < h.dim(0); ++b) {
        Tensor cols = out.view(static_cast<size_t>(b * V + v0) * dtype_size(dt), Shape{1, rows}, dt);
        linear_forward(ctx, h.slice(b, b + 1), w, nullptr, cols);
      }
    }
    feed.release();
  }
  return out;
}

}  // namespace onn
