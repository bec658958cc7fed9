// Streamed weights for the low-VRAM path (model/streaming.h).
#include "model/streaming.h"

#include <algorithm>
#include <cstring>

#include "runtime/error.h"

namespace onn {

namespace {

Allocator& host_allocator(Device device) {
  return device.is_cuda() ? static_cast<Allocator&>(pinned_allocator()) : cpu_allocator();
}

}  // namespace

StreamedWeights::StreamedWeights(Context& ctx, const LlamaModel& host_model, const StreamOptions& opt)
    : model_(host_model),
      k_(opt.layers_per_chunk),
      granule_(opt.head_granule) {
  const ModelConfig& c = host_model.config();
  const ModelWeights& W = host_model.weights();
  const int64_t L = c.num_hidden_layers;
  ONN_CHECK_ARG(host_model.on_host(), "layer streaming needs a model loaded with LlamaModel::load_to_host");
  ONN_CHECK_ARG(k_ >= 1 && k_ <= std::max<int64_t>(L, 1), "layers per chunk must be in [1, ", L, "], got ", k_);
  ONN_CHECK_ARG(granule_ >= 1, "the LM-head granule must be positive");
  ONN_CHECK_ARG(opt.activation_layers_on_device >= 0, "activation layers on the device must be >= 0, got ",
                opt.activation_layers_on_device);
  layer_chunks_ = (L + k_ - 1) / k_;
  std::vector<std::vector<Tensor>> chunks;
  size_t largest = 0;
  for (int64_t ch = 0; ch < layer_chunks_; ++ch) {
    std::vector<Tensor> t;
    for (int64_t l = ch * k_; l < std::min(L, (ch + 1) * k_); ++l) {
      const std::vector<Tensor> lt = layer_parts(c, W.layers[static_cast<size_t>(l)]);
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
  if (opt.offload_activations)
    offload_ = std::make_unique<ActivationOffload>(ctx, host_model, opt.activation_layers_on_device, *streamer_);
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
  const ModelConfig& c = model_.config();
  layers_.clear();
  size_t next = 0;
  for (int64_t l = ch * k_; l < std::min(c.num_hidden_layers, (ch + 1) * k_); ++l)
    layers_.push_back(layer_from_parts(c, model_.weights().layers[static_cast<size_t>(l)], t, next));
  return layers_;
}

Tensor StreamedWeights::acquire_head(int64_t s, int64_t* v0) {
  const std::vector<Tensor>& t = streamer_->acquire(static_cast<size_t>(layer_chunks_ + s));
  *v0 = head_v0_.at(static_cast<size_t>(s));
  return t.at(0);
}

void StreamedWeights::embed(Context& ctx, const Tensor& device_ids, const Tensor& host_ids_in, Tensor& x) {
  const Tensor& ids = host_ids_in.defined() ? host_ids_in : device_ids;
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
    staging_ = Tensor::empty(Shape{std::max<int64_t>(n, 1), C}, model_.dtype(), host_allocator(ctx.device()));
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

ActivationOffload::ActivationOffload(Context& ctx, const LlamaModel& model, int64_t layers_on_device,
                                     const ChunkStreamer& streamer)
    : model_(model), streamer_(streamer), on_device_(layers_on_device),
      stream_(std::make_unique<Stream>(ctx.device())) {}

size_t ActivationOffload::slot(size_t lane, size_t l) const {
  const size_t layers = static_cast<size_t>(model_.config().num_hidden_layers) + 1;
  ONN_CHECK_ARG(lane < lanes_ && l < layers, "activation slot (lane ", lane, ", layer ", l, ") outside the ", lanes_,
                " x ", layers, " reserved");
  return lane * layers + l;
}

Tensor ActivationOffload::host_slot(size_t lane, size_t l, const Shape& shape) const {
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(model_.dtype());
  ONN_CHECK_ARG(bytes <= slot_bytes_, "activation of ", bytes, " bytes in a slot of ", slot_bytes_);
  return host_acts_.view(slot(lane, l) * slot_bytes_, shape, model_.dtype());
}

void ActivationOffload::reserve(Context& ctx, size_t lanes, size_t bytes) {
  ONN_CHECK_ARG(lanes >= 1, "activation offload needs at least one lane");
  const size_t layers = static_cast<size_t>(model_.config().num_hidden_layers) + 1;
  if (lanes <= lanes_ && bytes <= slot_bytes_) return;  // the slots made before serve
  ONN_CHECK_ARG(bytes <= SIZE_MAX / layers / lanes, "activation slots of ", lanes, " x ", layers, " x ", bytes,
                " bytes overflow");
  ctx.synchronize();  // no copy may still use the slots being replaced
  stream_->synchronize();
  host_acts_ = Tensor();
  const size_t total = std::max<size_t>(lanes * layers * bytes, 1);
  host_acts_ = Tensor::empty(Shape{static_cast<int64_t>(total)}, DType::u8, host_allocator(ctx.device()));
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
void ActivationOffload::traced_copy(Context& ctx, const char* lane, size_t l, F&& copy) {
  StreamTrace* trace = streamer_.trace();
  if (!trace) {
    copy();
    return;
  }
  const double issued = trace->host_ms();
  Event start(ctx.device()), end(ctx.device());
  start.record(*stream_);
  copy();
  end.record(*stream_);
  trace->add(lane, static_cast<int64_t>(l), issued, std::move(start), std::move(end));
}

void ActivationOffload::offload(Context& ctx, size_t lane, size_t l, const Tensor& x) {
  Tensor dst = host_slot(lane, l, x.shape());
  Event produced(ctx.device(), false);
  produced.record(ctx.compute());
  stream_->wait(produced);
  traced_copy(ctx, "act_out", l, [&] {
    if (!ctx.rehearsal()) dst.copy_from(x, stream_.get());
  });
  out_done_[slot(lane, l)].record(*stream_);
  offloaded_bytes_ += x.nbytes();
}

void ActivationOffload::retire(Context& ctx, size_t lane, size_t l) { ctx.compute().wait(out_done_.at(slot(lane, l))); }

Tensor ActivationOffload::bring_back(Context& ctx, size_t lane, size_t l, const Shape& shape) {
  const Tensor src = host_slot(lane, l, shape);
  Tensor x = Tensor::empty(shape, model_.dtype(), ctx.allocator());
  // The memory may have been freed by compute work still queued: the copy waits for it.
  Event allocated(ctx.device(), false);
  allocated.record(ctx.compute());
  stream_->wait(allocated);
  stream_->wait(out_done_.at(slot(lane, l)));
  traced_copy(ctx, "act_in", l, [&] {
    if (!ctx.rehearsal()) x.copy_from(src, stream_.get());
  });
  in_done_.at(slot(lane, l)).record(*stream_);
  return x;
}

void ActivationOffload::await_back(Context& ctx, size_t lane, size_t l) {
  ctx.compute().wait(in_done_.at(slot(lane, l)));
}

}  // namespace onn
