// Streamed weights for the low-VRAM path (model/streaming.h).
#include "model/streaming.h"

#include <algorithm>
#include <cstring>

#include "runtime/error.h"

namespace onn {

std::vector<Tensor> layer_tensors(const ModelConfig& c, const LayerWeights& w) {
  std::vector<Tensor> t{w.input_norm, w.post_attn_norm};
  if (c.fused_qkv) {
    t.push_back(w.qkv);
  } else {
    t.insert(t.end(), {w.wq, w.wk, w.wv});
  }
  if (c.attention_bias) t.insert(t.end(), {w.bq, w.bk, w.bv});
  t.push_back(w.wo);
  if (c.o_bias) t.push_back(w.bo);
  if (c.fused_gate_up) {
    t.push_back(w.gate_up);
  } else {
    t.insert(t.end(), {w.wgate, w.wup});
  }
  t.push_back(w.wdown);
  return t;
}

LayerWeights layer_from_tensors(const ModelConfig& c, const std::vector<Tensor>& t, size_t i) {
  const int64_t HD = c.num_attention_heads * c.head_dim, KD = c.num_key_value_heads * c.head_dim,
                F = c.intermediate_size;
  LayerWeights w;
  w.input_norm = t.at(i++);
  w.post_attn_norm = t.at(i++);
  if (c.fused_qkv) {
    w.qkv = t.at(i++);
    w.wq = w.qkv.slice(0, HD);
    w.wk = w.qkv.slice(HD, HD + KD);
    w.wv = w.qkv.slice(HD + KD, HD + 2 * KD);
  } else {
    w.wq = t.at(i++);
    w.wk = t.at(i++);
    w.wv = t.at(i++);
  }
  if (c.attention_bias) {
    w.bq = t.at(i++);
    w.bk = t.at(i++);
    w.bv = t.at(i++);
  }
  w.wo = t.at(i++);
  if (c.o_bias) w.bo = t.at(i++);
  if (c.fused_gate_up) {
    w.gate_up = t.at(i++);
    w.wgate = w.gate_up.slice(0, F);
    w.wup = w.gate_up.slice(F, 2 * F);
  } else {
    w.wgate = t.at(i++);
    w.wup = t.at(i++);
  }
  w.wdown = t.at(i++);
  return w;
}

StreamedWeights::StreamedWeights(Context& ctx, const LlamaModel& host_model, const StreamOptions& opt)
    : model_(host_model),
      k_(opt.layers_per_chunk),
      granule_(opt.head_granule),
      offload_(opt.offload_activations),
      on_device_(opt.activation_layers_on_device) {
  const ModelConfig& c = host_model.config();
  const ModelWeights& W = host_model.weights();
  const int64_t L = c.num_hidden_layers;
  ONN_CHECK_ARG(host_model.on_host(), "layer streaming needs a model loaded with LlamaModel::load_to_host");
  ONN_CHECK_ARG(k_ >= 1 && k_ <= std::max<int64_t>(L, 1), "layers per chunk must be in [1, ", L, "], got ", k_);
  ONN_CHECK_ARG(granule_ >= 1, "the LM-head granule must be positive");
  ONN_CHECK_ARG(on_device_ >= 0, "activation layers on the device must be >= 0, got ", on_device_);
  layer_chunks_ = (L + k_ - 1) / k_;
  tensors_per_layer_ = L > 0 ? layer_tensors(c, W.layers[0]).size() : 1;
  std::vector<std::vector<Tensor>> chunks;
  size_t largest = 0;
  for (int64_t ch = 0; ch < layer_chunks_; ++ch) {
    std::vector<Tensor> t;
    for (int64_t l = ch * k_; l < std::min(L, (ch + 1) * k_); ++l) {
      const std::vector<Tensor> lt = layer_tensors(c, W.layers[static_cast<size_t>(l)]);
      t.insert(t.end(), lt.begin(), lt.end());
    }
    size_t bytes = 0;
    for (const Tensor& x : t) bytes += x.nbytes();
    largest = std::max(largest, bytes);
    chunks.push_back(std::move(t));
  }
  // Head slices: as many whole granules as the largest layer chunk holds (at least one).
  const int64_t V = c.vocab_size;
  const size_t row_bytes = static_cast<size_t>(c.hidden_size) * dtype_size(host_model.dtype());
  const int64_t granules = std::max<int64_t>(1, static_cast<int64_t>(largest / row_bytes) / granule_);
  const int64_t rows = std::min(V, granules * granule_);
  for (int64_t v0 = 0; v0 < V; v0 += rows) {
    head_v0_.push_back(v0);
    chunks.push_back({W.lm_head.slice(v0, std::min(V, v0 + rows))});
  }
  streamer_ = std::make_unique<ChunkStreamer>(ctx, std::move(chunks));
  if (offload_) act_stream_ = std::make_unique<Stream>(ctx.device());
  staged_ = Event(ctx.device(), false);
  norm_ = Tensor::empty(W.norm.shape(), W.norm.dtype(), ctx.allocator());
  norm_.copy_from(W.norm, &ctx.compute());
}

void StreamedWeights::plan_pass(int64_t backward_to_layer) {
  std::vector<size_t> order;
  const size_t S = head_v0_.size();
  for (int64_t ch = 0; ch < layer_chunks_; ++ch) order.push_back(static_cast<size_t>(ch));
  for (size_t s = 0; s < S; ++s) order.push_back(static_cast<size_t>(layer_chunks_) + s);
  if (backward_to_layer >= 0) {
    for (size_t s = S; s-- > 0;) order.push_back(static_cast<size_t>(layer_chunks_) + s);
    for (int64_t ch = layer_chunks_; ch-- > backward_to_layer / k_;) order.push_back(static_cast<size_t>(ch));
  }
  streamer_->plan(std::move(order));
}

const std::vector<LayerWeights>& StreamedWeights::acquire_layers(int64_t ch) {
  const std::vector<Tensor>& t = streamer_->acquire(static_cast<size_t>(ch));
  layers_.clear();
  for (size_t i = 0; i < t.size(); i += tensors_per_layer_) layers_.push_back(layer_from_tensors(model_.config(), t, i));
  return layers_;
}

Tensor StreamedWeights::acquire_head(int64_t s, int64_t* v0) {
  const std::vector<Tensor>& t = streamer_->acquire(static_cast<size_t>(layer_chunks_ + s));
  *v0 = head_v0_.at(static_cast<size_t>(s));
  return t.at(0);
}

void StreamedWeights::embed(Context& ctx, const Tensor& ids, Tensor& x) {
  const ModelConfig& c = model_.config();
  ONN_CHECK_ARG(ids.rank() == 1 && ids.dtype() == DType::i32, "embed: ids must be (N) I32");
  const int64_t n = ids.dim(0), C = c.hidden_size, V = c.vocab_size;
  ONN_CHECK_ARG(x.shape() == Shape({n, C}) && x.dtype() == model_.dtype(), "embed: x must be (", n, ", ", C, ") ",
                dtype_name(model_.dtype()));
  if (ctx.rehearsal()) return;  // no rows gathered or copied
  const Tensor host_ids = ids.device().is_cpu() ? ids : ids.to(Device::cpu());
  const size_t row = static_cast<size_t>(C) * dtype_size(model_.dtype());
  staged_.synchronize();  // the previous gather's copy out of staging is done (not all later work)
  if (!staging_.defined() || staging_.nbytes() < static_cast<size_t>(n) * row)
    staging_ = Tensor::empty(Shape{std::max<int64_t>(n, 1), C}, model_.dtype(),
                             ctx.device().is_cuda() ? static_cast<Allocator&>(pinned_allocator()) : cpu_allocator());
  const int32_t* id = host_ids.data_as<int32_t>();
  const auto* table = static_cast<const unsigned char*>(model_.weights().embed.data());
  auto* out = static_cast<unsigned char*>(staging_.data());
  for (int64_t i = 0; i < n; ++i) {
    ONN_CHECK_ARG(id[i] >= 0 && id[i] < V, "embed: ids[", i, "] = ", id[i], " is outside the vocabulary of ", V);
    std::memcpy(out + static_cast<size_t>(i) * row, table + static_cast<size_t>(id[i]) * row, row);
  }
  x.copy_from(staging_.view(0, x.shape(), x.dtype()), &ctx.compute());
  staged_.record(ctx.compute());
}

size_t StreamedWeights::slot(size_t lane, size_t l) const {
  const size_t layers = static_cast<size_t>(model_.config().num_hidden_layers) + 1;
  ONN_CHECK_ARG(lane < lanes_ && l < layers, "activation slot (lane ", lane, ", layer ", l, ") outside the ", lanes_,
                " x ", layers, " reserved");
  return lane * layers + l;
}

Tensor StreamedWeights::host_slot(size_t lane, size_t l, const Shape& shape) const {
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(model_.dtype());
  ONN_CHECK_ARG(bytes <= slot_bytes_, "activation of ", bytes, " bytes in a slot of ", slot_bytes_);
  return host_acts_.view(slot(lane, l) * slot_bytes_, shape, model_.dtype());
}

void StreamedWeights::reserve_activations(Context& ctx, size_t lanes, size_t bytes) {
  ONN_CHECK_ARG(offload_, "activation offload is off");
  ONN_CHECK_ARG(lanes >= 1, "activation offload needs at least one lane");
  const size_t layers = static_cast<size_t>(model_.config().num_hidden_layers) + 1;
  if (lanes <= lanes_ && bytes <= slot_bytes_) return;  // the slots made before serve
  ONN_CHECK_ARG(bytes <= SIZE_MAX / layers / lanes, "activation slots of ", lanes, " x ", layers, " x ", bytes,
                " bytes overflow");
  ctx.synchronize();  // no copy may still use the slots being replaced
  act_stream_->synchronize();
  host_acts_ = Tensor();
  const size_t total = std::max<size_t>(lanes * layers * bytes, 1);
  host_acts_ = Tensor::empty(Shape{static_cast<int64_t>(total)}, DType::u8,
                             ctx.device().is_cuda() ? static_cast<Allocator&>(pinned_allocator()) : cpu_allocator());
  lanes_ = lanes;
  slot_bytes_ = bytes;
  out_done_.clear();
  in_done_.clear();
  for (size_t i = 0; i < lanes * layers; ++i) {
    out_done_.emplace_back(ctx.device(), false);
    in_done_.emplace_back(ctx.device(), false);
  }
}

template <typename F>
void StreamedWeights::traced_copy(Context& ctx, const char* lane, size_t l, F&& copy) {
  StreamTrace* trace = streamer_->trace();
  if (!trace) {
    copy();
    return;
  }
  const double issued = trace->host_ms();
  Event start(ctx.device()), end(ctx.device());
  start.record(*act_stream_);
  copy();
  end.record(*act_stream_);
  trace->add(lane, static_cast<int64_t>(l), issued, std::move(start), std::move(end));
}

void StreamedWeights::offload(Context& ctx, size_t lane, size_t l, const Tensor& x) {
  ONN_CHECK_ARG(offload_, "activation offload is off");
  Tensor dst = host_slot(lane, l, x.shape());
  Event produced(ctx.device(), false);
  produced.record(ctx.compute());
  act_stream_->wait(produced);
  traced_copy(ctx, "act_out", l, [&] {
    if (!ctx.rehearsal()) dst.copy_from(x, act_stream_.get());
  });
  out_done_[slot(lane, l)].record(*act_stream_);
  offloaded_bytes_ += x.nbytes();
}

void StreamedWeights::retire(Context& ctx, size_t lane, size_t l) { ctx.compute().wait(out_done_.at(slot(lane, l))); }

Tensor StreamedWeights::bring_back(Context& ctx, size_t lane, size_t l, const Shape& shape) {
  const Tensor src = host_slot(lane, l, shape);
  Tensor x = Tensor::empty(shape, model_.dtype(), ctx.allocator());
  // The memory may have been freed by compute work still queued: the copy waits for it.
  Event allocated(ctx.device(), false);
  allocated.record(ctx.compute());
  act_stream_->wait(allocated);
  act_stream_->wait(out_done_.at(slot(lane, l)));
  traced_copy(ctx, "act_in", l, [&] {
    if (!ctx.rehearsal()) x.copy_from(src, act_stream_.get());
  });
  in_done_.at(slot(lane, l)).record(*act_stream_);
  return x;
}

void StreamedWeights::await_back(Context& ctx, size_t lane, size_t l) {
  ctx.compute().wait(in_done_.at(slot(lane, l)));
}

}  // namespace onn
