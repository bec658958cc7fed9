// The one layer loop. Every pass of the model, generation's prefill and decode, evaluation,
// training forward and backward, alone or as several micro-batches ("lanes") sharing each
// weight load, walks the blocks (model/block.h) through a WeightFeed: the model's resident
// weights (ResidentWeights), or chunks of layers streamed to the device and released
// (model/streaming.h). Each chunk, once on the device, serves lane 0, then lane 1, ... so a
// gradient receives the lanes' contributions in lane order, as consecutive passes add them.
#pragma once

#include <functional>

#include <cstdint>
#include <limits>
#include <vector>

#include "model/block.h"
#include "model/llama.h"

namespace onn {

class ActivationOffload;

// Where a pass's weights come from, in the order the pass asks for them.
class WeightFeed {
 public:
  virtual ~WeightFeed() = default;
  virtual int64_t layers_per_chunk() const = 0;
  virtual int64_t layer_chunks() const = 0;
  virtual int64_t head_slices() const = 0;
  // Vocabulary rows per granule of the sliced LM head this feed's head slices are cut in; 0:
  // the whole head is one slice, for the fused LM head as well.
  virtual int64_t head_granule() const = 0;
  // The order of a pass: the layer chunks up, the head slices up; with backward_to_layer >= 0
  // also the head slices down and the layer chunks down to the one holding that layer.
  virtual void plan_pass(int64_t backward_to_layer) = 0;
  // Chunk c's layers, [c k, min(L, (c + 1) k)), on the device.
  virtual const std::vector<LayerWeights>& acquire_layers(int64_t c) = 0;
  // Head slice s on the device: (rows, C), vocabulary rows from *v0.
  virtual Tensor acquire_head(int64_t s, int64_t* v0) = 0;
  virtual void release() = 0;  // the chunk or slice acquired last is done with
  virtual const Tensor& norm() const = 0;  // (C) on the device
  // x (N, C) = the embedding rows of ids (N) I32 on the device; host_ids, when defined, are the
  // same ids on the host (a streamed feed gathers its rows there).
  virtual void embed(Context& ctx, const Tensor& ids, const Tensor& host_ids, Tensor& x) = 0;
  // Where layer inputs kept for the backward go to host memory; null: they stay on the device.
  virtual ActivationOffload* offload() { return nullptr; }
};

// The model's own weights, on the device: one chunk of every layer, one head slice.
class ResidentWeights final : public WeightFeed {
 public:
  explicit ResidentWeights(const LlamaModel& model);
  int64_t layers_per_chunk() const override;
  int64_t layer_chunks() const override;
  int64_t head_slices() const override { return 1; }
  int64_t head_granule() const override { return 0; }
  void plan_pass(int64_t) override {}
  const std::vector<LayerWeights>& acquire_layers(int64_t c) override;
  Tensor acquire_head(int64_t s, int64_t* v0) override;
  void release() override {}
  const Tensor& norm() const override { return model_.weights().norm; }
  void embed(Context& ctx, const Tensor& ids, const Tensor& host_ids, Tensor& x) override;

 private:
  const LlamaModel& model_;
};

// One micro-batch of a pass.
struct Lane {
  const Tensor* ids = nullptr;       // (N) I32 on the device
  Tensor host_ids;                   // optional: the same on the host
  const Tensor* labels = nullptr;    // (N) I32 (passes with a loss)
  BlockInput block;
  // The token count the loss is divided by (a whole optimizer step's across accumulation); 0:
  // this micro-batch's own count.
  int64_t loss_tokens = 0;
  // Set: the loss is copied there on the compute stream and the pass returns NaN without
  // waiting for the device; null: the pass waits and returns it.
  Tensor* loss_out = nullptr;
};

struct StackOptions {
  // Resident training keeps only layer inputs and recomputes each layer's internals in the
  // backward (a streamed pass always does).
  bool recompute = false;
  // Resident: the LM head through SlicedLmHeadLoss with this granule (the streamed pass's
  // bits); 0: the fused lm_head_cross_entropy. A streamed feed slices with its own granule.
  int64_t head_granule = 0;
  // Training: called once every lane's backward of layer l is queued (PassOptions).
  std::function<void(int64_t layer)> on_layer_gradients;
};

// The final-norm hidden states (N, C) of each lane: the blocks without a loss.
std::vector<Tensor> stack_hidden(Context& ctx, const LlamaModel& model, WeightFeed& feed,
                                 const std::vector<Lane>& lanes);
// Each lane's loss (its token losses summed over loss_tokens) without gradients; NaN for a lane
// with loss_out.
std::vector<double> stack_loss(Context& ctx, const LlamaModel& model, WeightFeed& feed, const std::vector<Lane>& lanes,
                               const StackOptions& opt);
// Forward and backward of every lane, gradients added into `grads` in lane order; the losses as
// stack_loss. LoRA stops the backward at the lowest adapted layer.
std::vector<double> stack_train(Context& ctx, const LlamaModel& model, WeightFeed& feed, const std::vector<Lane>& lanes,
                                Gradients& grads, const StackOptions& opt);
// (N, V) logits of hidden states h (N, C) through the feed's head slices, in the compute dtype.
Tensor stack_logits(Context& ctx, const LlamaModel& model, WeightFeed& feed, const Tensor& h);

}  // namespace onn
