// The low-VRAM path of the model: frozen weights in host memory (LlamaModel::load_to_host)
// streamed to the device through runtime/layer_stream.h's two buffers, k layers per chunk,
// and the LM head in vocabulary slices that fit the same buffers. The embedding stays on the
// host (the rows a micro-batch needs are gathered there and copied), the final norm is kept
// on the device. model/training.h runs its forward and backward over this when
// PassOptions::stream is set.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/llama.h"
#include "runtime/layer_stream.h"

namespace onn {

struct StreamOptions {
  int64_t layers_per_chunk = 1;
  // Vocabulary rows per LM-head granule (SlicedLmHeadLoss); a slice holds as many granules
  // as fit a chunk buffer, at least one.
  int64_t head_granule = 8192;
  // Layer-boundary activations kept for the backward go to pinned host memory (copied out on
  // a stream of their own while the next layer computes, and back one layer ahead of the
  // backward) instead of staying on the device.
  bool offload_activations = false;
  // With offload: the inputs of the top this-many layers stay on the device all the same (the
  // backward needs them first); those below are offloaded.
  int64_t activation_layers_on_device = 0;
};

// The owning tensors of a layer (a fused original once, not its row views) in a fixed order,
// and the layer rebuilt over other storage holding the same tensors (fused views re-sliced).
std::vector<Tensor> layer_tensors(const ModelConfig& c, const LayerWeights& w);
LayerWeights layer_from_tensors(const ModelConfig& c, const std::vector<Tensor>& t, size_t begin);

class StreamedWeights {
 public:
  StreamedWeights(Context& ctx, const LlamaModel& host_model, const StreamOptions& opt);

  const LlamaModel& model() const { return model_; }
  int64_t layers_per_chunk() const { return k_; }
  int64_t layer_chunks() const { return layer_chunks_; }
  int64_t head_slices() const { return static_cast<int64_t>(head_v0_.size()); }
  int64_t head_granule() const { return granule_; }
  size_t buffer_bytes() const { return streamer_->buffer_bytes(); }
  ChunkStreamer& streamer() { return *streamer_; }

  // The order of a pass: layer chunks up, head slices up; with `backward_to_layer` >= 0 also
  // the head slices down and the layer chunks down to the one holding that layer.
  void plan_pass(int64_t backward_to_layer);
  // Chunk c's layers, [c k, min(L, (c + 1) k)), on the device; the next chunk's copy starts.
  const std::vector<LayerWeights>& acquire_layers(int64_t c);
  // Head slice s on the device: (rows, C), vocabulary rows from *v0.
  Tensor acquire_head(int64_t s, int64_t* v0);
  void release() { streamer_->release(); }

  const Tensor& norm() const { return norm_; }  // (C) on the device
  // x (N, C) on the device = the embedding rows of ids (N) I32, gathered on the host and copied
  // on the compute stream. Host ids cost no wait; device ids are read back first, which waits
  // for the device. The host waits only for the previous gather's copy before reusing its
  // staging buffer.
  void embed(Context& ctx, const Tensor& ids, Tensor& x);

  bool offload_activations() const { return offload_; }
  int64_t activation_layers_on_device() const { return on_device_; }
  // Activation offload, per lane (a micro-batch of the pass; one lane unless several share
  // each weight load): host slots for `lanes` x (L + 1) layer inputs of up to `bytes` each,
  // made before a pass's first offload (reallocating, when more or larger slots are needed,
  // waits for the device).
  void reserve_activations(Context& ctx, size_t lanes, size_t bytes);
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
  const LlamaModel& model_;
  int64_t k_ = 1, layer_chunks_ = 0, granule_ = 0;
  size_t tensors_per_layer_ = 0;
  std::vector<int64_t> head_v0_;
  std::unique_ptr<ChunkStreamer> streamer_;
  std::vector<LayerWeights> layers_;  // the acquired chunk's
  Tensor norm_;
  Tensor staging_;  // pinned (N, C) rows for embed
  Event staged_;    // recorded after the copy out of staging_
  bool offload_ = false;
  int64_t on_device_ = 0;
  std::unique_ptr<Stream> act_stream_;
  Tensor host_acts_;               // pinned, one (N, C) slot per lane and layer
  size_t lanes_ = 0, slot_bytes_ = 0;
  std::vector<Event> out_done_, in_done_;  // per slot
  uint64_t offloaded_bytes_ = 0;
  size_t slot(size_t lane, size_t l) const;
  Tensor host_slot(size_t lane, size_t l, const Shape& shape) const;
  // An activation copy on act_stream_, a span of the streamer's trace when it has one.
  template <typename F>
  void traced_copy(Context& ctx, const char* lane, size_t l, F&& copy);
};

}  // namespace onn
