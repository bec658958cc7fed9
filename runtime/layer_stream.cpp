// The double-buffered chunk streamer (runtime/layer_stream.h).
#include "runtime/layer_stream.h"

#include <algorithm>

#include "runtime/error.h"

namespace onn {

namespace {
constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

ChunkStreamer::ChunkStreamer(Context& ctx, std::vector<std::vector<Tensor>> chunks)
    : ctx_(ctx), chunks_(std::move(chunks)) {
  ONN_CHECK_ARG(!chunks_.empty(), "ChunkStreamer: no chunks");
  for (const auto& c : chunks_) {
    size_t bytes = 0;
    for (const Tensor& t : c) {
      ONN_CHECK_ARG(t.defined() && t.device().is_cpu(), "ChunkStreamer: chunk tensors must be host tensors");
      bytes += align_up(t.nbytes());
    }
    buffer_bytes_ = std::max(buffer_bytes_, bytes);
  }
  for (Slot& s : slots_) {
    s.buffer = Tensor::empty(Shape{static_cast<int64_t>(std::max<size_t>(buffer_bytes_, 1))}, DType::u8,
                             ctx.allocator());
    s.ready = Event(ctx.device(), false);
    s.freed = Event(ctx.device(), false);
  }
}

ChunkStreamer::~ChunkStreamer() {
  try {
    ctx_.synchronize();  // no copy may still write a buffer that is about to be freed
  } catch (...) {
  }
}

uint64_t ChunkStreamer::chunk_bytes(size_t i) const {
  uint64_t b = 0;
  for (const Tensor& t : chunks_.at(i)) b += t.nbytes();
  return b;
}

ChunkStreamer::Slot* ChunkStreamer::find(size_t chunk) {
  for (Slot& s : slots_)
    if (s.chunk == static_cast<int64_t>(chunk)) return &s;
  return nullptr;
}

void ChunkStreamer::load(size_t chunk, Slot& slot) {
  ONN_CHECK_ARG(!slot.in_use, "ChunkStreamer: both buffers are in use (release the chunk first)");
  Stream& copy = ctx_.copy();
  if (slot.freed_recorded) copy.wait(slot.freed);  // compute is done with the chunk it held
  Event start(ctx_.device()), end(ctx_.device());
  start.record(copy);
  slot.views.clear();
  size_t off = 0;
  for (const Tensor& t : chunks_[chunk]) {
    Tensor v = slot.buffer.view(off, t.shape(), t.dtype());
    v.copy_from(t, &copy);
    slot.views.push_back(v);
    off += align_up(t.nbytes());
    stats_.bytes += t.nbytes();
  }
  end.record(copy);
  slot.ready.record(copy);
  slot.chunk = static_cast<int64_t>(chunk);
  ++stats_.copies;
  timings_.emplace_back(std::move(start), std::move(end));
}

void ChunkStreamer::plan(std::vector<size_t> order) {
  for (size_t c : order) ONN_CHECK_ARG(c < chunks_.size(), "ChunkStreamer::plan: chunk ", c, " of ", chunks_.size());
  ONN_CHECK_ARG(current_ < 0 || !slots_[current_].in_use, "ChunkStreamer::plan while a chunk is acquired");
  order_ = std::move(order);
  pos_ = 0;
  if (!order_.empty() && !find(order_[0])) load(order_[0], slots_[current_ == 0 ? 1 : 0]);
}

const std::vector<Tensor>& ChunkStreamer::acquire(size_t chunk) {
  ONN_CHECK_ARG(pos_ < order_.size() && order_[pos_] == chunk, "ChunkStreamer::acquire: chunk ", chunk,
                " is not the next in the planned order");
  ONN_CHECK_ARG(current_ < 0 || !slots_[current_].in_use, "ChunkStreamer::acquire before release");
  Slot* s = find(chunk);
  if (!s) {  // not prefetched (the first of a plan whose buffers were busy)
    Slot& other = slots_[current_ == 0 ? 1 : 0];
    load(chunk, other);
    s = &other;
  }
  ctx_.compute().wait(s->ready);
  compute_start_ = Event(ctx_.device());
  compute_start_.record(ctx_.compute());
  s->in_use = true;
  current_ = static_cast<int>(s - slots_);
  ++pos_;
  // Prefetch the next distinct chunk into the other buffer (once compute releases it).
  if (pos_ < order_.size() && order_[pos_] != chunk && !find(order_[pos_])) load(order_[pos_], slots_[1 - current_]);
  return s->views;
}

void ChunkStreamer::release() {
  ONN_CHECK_ARG(current_ >= 0 && slots_[current_].in_use, "ChunkStreamer::release without an acquired chunk");
  Slot& s = slots_[current_];
  s.freed.record(ctx_.compute());
  s.freed_recorded = true;
  Event end(ctx_.device());
  end.record(ctx_.compute());
  compute_timings_.emplace_back(std::move(compute_start_), std::move(end));
  s.in_use = false;
  // The chunk after next may go into the other buffer only after this one is released:
  // nothing to do here, acquire() of the next chunk starts it.
}

StreamStats ChunkStreamer::stats() {
  for (auto& [start, end] : timings_) {
    end.synchronize();
    stats_.copy_ms += Event::elapsed_ms(start, end);
  }
  timings_.clear();
  for (auto& [start, end] : compute_timings_) {
    end.synchronize();
    stats_.compute_ms += Event::elapsed_ms(start, end);
  }
  compute_timings_.clear();
  return stats_;
}

void ChunkStreamer::reset_stats() {
  stats();
  stats_ = StreamStats{};
}

}  // namespace onn
