// The low-VRAM path of the model: frozen weights in host memory (LlamaModel::load_to_host)
// streamed to the device through runtime/layer_stream.h's two buffers, k layers per chunk,
// and the LM head in vocabulary slices that fit the same buffers. The embedding stays on the
// host (the rows a micro-batch needs are gathered there and copied), the final norm is kept
// on the device. A StreamedWeights is the WeightFeed (model/stack.h) every pass of a
// host-resident model runs over; with activation offload it also sends the layer inputs the
// backward needs to pinned host memory and back.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/defaults.h"
#include "model/llama.h"
#include "model/stack.h"
#include "runtime/layer_stream.h"

namespace onn {

struct StreamOptions {
  int64_t layers_per_chunk = 1;
  // Vocabulary rows per LM-head granule (SlicedLmHeadLoss); a slice holds as many granules
  // as fit a chunk buffer, at least one.
  int64_t head_granule = kLmHeadGranule;
  // Layer-boundary activations kept for the backward go to pinned host memory (copied out on
  // a stream of their own while the next layer computes, and back one layer ahead of the
  // backward) instead of staying on the device.
  bool offload_activations = false;
  // With offload: the inputs of the top this-many layers stay on the device all the same (the
  // backward needs them first); those below are offloaded.
  int64_t activation_layers_on_device = 0;
};

// Layer inputs offloaded to pinned host memory, per lane (a micro-batch of the pass; one lane
// unless several share each weight load), copied on a stream of their own.
class ActivationOffload {
 public:
  ActivationOffload(Context& ctx, const LlamaModel& model, int64_t layers_on_device, const ChunkStreamer& streamer);

  int64_t layers_on_device() const { return on_device_; }
  // Host slots for `lanes` x (L + 1) layer inputs of up to `bytes` each, made before a pass's
  // first offload (reallocating, when more or larger slots are needed, waits for the device).
  void reserve(Context& ctx, size_t lanes, size_t bytes);
  // x (lane's layer l input, on the device) copied to its host slot once the compute stream
  // has produced it; the device copy may be dropped after retire.
  void offload(Context& ctx, size_t lane, size_t l, const Tensor& x);
  void retire(Context& ctx, size_t lane, size_t l);  // later compute work waits for the copy out
  // Starts bringing the slot back into a fresh device tensor (returned; usable on the compute
  // stream after await_back).
  Tensor bring_back(Context& ctx, size_t lane, size_t l, const Shape& shape);
  void await_back(Context& ctx, size_t lane, size_t l);
  uint64_t offloaded_bytes() const { return offloaded_bytes_; }

 private:
  size_t slot(size_t lane, size_t l) const;
  Tensor host_slot(size_t lane, size_t l, const Shape& shape) const;
  // An activation copy on stream_, a span of the streamer's trace when it has one.
  template <typename F>
  void traced_copy(Context& ctx, const char* lane, size_t l, F&& copy);

  const LlamaModel& model_;
  const ChunkStreamer& streamer_;
  int64_t on_device_ = 0;
  std::unique_ptr<Stream> stream_;
  Tensor host_acts_;  // pinned, one (N, C) slot per lane and layer
  size_t lanes_ = 0, slot_bytes_ = 0;
  std::vector<Event> out_done_, in_done_;  // per slot
  uint64_t offloaded_bytes_ = 0;
};

class StreamedWeights final : public WeightFeed {
 public:
  StreamedWeights(Context& ctx, const LlamaModel& host_model, const StreamOptions& opt);

  const LlamaModel& model() const { return model_; }
  int64_t layers_per_chunk() const override { return k_; }
  int64_t layer_chunks() const override { return layer_chunks_; }
  int64_t head_slices() const override { return static_cast<int64_t>(head_v0_.size()); }
  int64_t head_granule() const override { return granule_; }
  size_t buffer_bytes() const { return streamer_->buffer_bytes(); }
  ChunkStreamer& streamer() { return *streamer_; }

  void plan_pass(int64_t backward_to_layer) override;
  // Also starts the copy of the next chunk in the pass's order into the other buffer.
  const std::vector<LayerWeights>& acquire_layers(int64_t c) override;
  Tensor acquire_head(int64_t s, int64_t* v0) override;
  void release() override { streamer_->release(); }

  const Tensor& norm() const override { return norm_; }
  // Gathered on the host and copied on the compute stream. Host ids cost no wait; device ids
  // are read back first, which waits for the device. The host waits only for the previous
  // gather's copy before reusing its staging buffer.
  void embed(Context& ctx, const Tensor& ids, const Tensor& host_ids, Tensor& x) override;

  ActivationOffload* offload() override { return offload_.get(); }
  bool offload_activations() const { return offload_ != nullptr; }
  int64_t activation_layers_on_device() const { return offload_ ? offload_->layers_on_device() : 0; }
  uint64_t offloaded_bytes() const { return offload_ ? offload_->offloaded_bytes() : 0; }

 private:
  const LlamaModel& model_;
  int64_t k_ = 1, layer_chunks_ = 0, granule_ = 0;
  std::vector<int64_t> head_v0_;
  std::unique_ptr<ChunkStreamer> streamer_;
  std::vector<LayerWeights> layers_;  // the acquired chunk's
  Tensor norm_;
  Tensor staging_;  // pinned (N, C) rows for embed
  Event staged_;    // recorded after the copy out of staging_
  std::unique_ptr<ActivationOffload> offload_;
};

}  // namespace onn
