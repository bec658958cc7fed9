// The double-buffered chunk streamer (runtime/layer_stream.h).
#include "runtime/layer_stream.h"

#include <algorithm>

#include "runtime/error.h"

namespace onn {

namespace {
constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Total length of the union of [start, end) intervals.
double union_ms(std::vector<std::pair<double, double>> v) {
  std::sort(v.begin(), v.end());
  double total = 0, lo = 0, hi = -1;
  bool open = false;
  for (const auto& [a, b] : v) {
    if (open && a <= hi) {
      hi = std::max(hi, b);
      continue;
    }
    if (open) total += hi - lo;
    lo = a;
    hi = b;
    open = true;
  }
  if (open) total += hi - lo;
  return total;
}
}  // namespace

nlohmann::ordered_json trace_json(const std::vector<TraceSpan>& spans) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const TraceSpan& t : spans) {
    nlohmann::ordered_json j = {{"lane", t.lane},          {"index", t.index},   {"issued_ms", t.issued_ms},
                                {"start_ms", t.start_ms}, {"end_ms", t.end_ms}, {"slot", t.slot}};
    if (t.lane == "host") {
      j["call"] = t.call;
      j["bytes"] = t.bytes;
    }
    a.push_back(std::move(j));
  }
  return a;
}

nlohmann::ordered_json trace_summary_json(const TraceSummary& s) {
  return {{"span_ms", s.span_ms},
          {"compute_ms", s.compute_ms},
          {"copy_ms", s.copy_ms},
          {"act_copy_ms", s.act_copy_ms},
          {"overlap_ms", s.overlap_ms},
          {"idle_ms", s.idle_ms},
          {"idle_host_ms", s.idle_host_ms},
          {"idle_copy_ms", s.idle_copy_ms},
          {"idle_other_ms", s.idle_other_ms},
          {"tail_ms", s.tail_ms},
          {"copy_host_late_ms", s.copy_host_late_ms},
          {"copy_queued_ms", s.copy_queued_ms},
          {"host_calls_ms", s.host_calls_ms},
          {"host_calls", s.host_calls},
          {"idle_host_calls_ms", s.idle_host_calls_ms}};
}

StreamTrace::~StreamTrace() { stop_host_spans(); }

void StreamTrace::stop_host_spans() {
  if (!sink_) return;
  // Put back whoever was the sink before, unless someone else has taken over since.
  HostSpanSink* now = set_host_span_sink(previous_sink_);
  if (now != this) set_host_span_sink(now);
  sink_ = false;
}

void StreamTrace::begin(const Stream& stream) {
  stop_host_spans();
  pending_.clear();
  {
    std::lock_guard<std::mutex> lock(host_mu_);
    host_.clear();
  }
  origin_.record(stream);
  host_origin_ = std::chrono::steady_clock::now();
  begun_ = true;
  previous_sink_ = set_host_span_sink(this);
  sink_ = true;
}

void StreamTrace::host_span(const char* call, uint64_t bytes, std::chrono::steady_clock::time_point start,
                            std::chrono::steady_clock::time_point end) {
  using ms = std::chrono::duration<double, std::milli>;
  TraceSpan t;
  t.lane = "host";
  t.call = call;
  t.bytes = bytes;
  t.issued_ms = t.start_ms = ms(start - host_origin_).count();
  t.end_ms = ms(end - host_origin_).count();
  std::lock_guard<std::mutex> lock(host_mu_);
  host_.push_back(std::move(t));
}

double StreamTrace::host_ms() const {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_origin_).count();
}

void StreamTrace::add(std::string lane, int64_t index, double issued_ms, Event start, Event end, int slot) {
  if (begun_) pending_.push_back(Pending{std::move(lane), index, issued_ms, std::move(start), std::move(end), slot});
}

std::vector<TraceSpan> StreamTrace::take() {
  stop_host_spans();  // the waits below are the trace's own
  std::vector<TraceSpan> out;
  {
    std::lock_guard<std::mutex> lock(host_mu_);
    out = std::move(host_);
    host_.clear();
  }
  for (Pending& p : pending_) {
    p.end.synchronize();
    out.push_back(TraceSpan{p.lane, p.index, p.issued_ms, Event::elapsed_ms(origin_, p.start),
                            Event::elapsed_ms(origin_, p.end), p.slot, {}, 0});
  }
  pending_.clear();
  std::stable_sort(out.begin(), out.end(), [](const TraceSpan& a, const TraceSpan& b) { return a.start_ms < b.start_ms; });
  return out;
}

TraceSummary summarize_trace(const std::vector<TraceSpan>& spans) {
  TraceSummary s;
  std::vector<std::pair<double, double>> compute, copy, act;
  std::vector<const TraceSpan*> windows, copies, host;
  for (const TraceSpan& t : spans) {
    if (t.lane == "host") {
      host.push_back(&t);
      s.host_calls_ms[t.call] += t.end_ms - t.start_ms;
      ++s.host_calls[t.call];
      continue;
    }
    s.span_ms = std::max(s.span_ms, t.end_ms);
    if (t.lane == "compute") {
      compute.emplace_back(t.start_ms, t.end_ms);
      windows.push_back(&t);
    } else if (t.lane == "copy") {
      copy.emplace_back(t.start_ms, t.end_ms);
      copies.push_back(&t);
    } else {
      act.emplace_back(t.start_ms, t.end_ms);
    }
  }
  s.compute_ms = union_ms(compute);
  s.copy_ms = union_ms(copy);
  s.act_copy_ms = union_ms(act);
  // Copy time under compute windows: |copy| + |compute| - |copy or compute|.
  std::vector<std::pair<double, double>> both = compute;
  both.insert(both.end(), copy.begin(), copy.end());
  s.overlap_ms = std::max(0.0, s.copy_ms + s.compute_ms - union_ms(both));
  s.idle_ms = std::max(0.0, s.span_ms - s.compute_ms);
  std::sort(windows.begin(), windows.end(), [](const TraceSpan* a, const TraceSpan* b) { return a->start_ms < b->start_ms; });
  double prev_end = 0;
  for (const TraceSpan* w : windows) {
    const double gap = w->start_ms - prev_end;
    if (gap > 0) {
      // The host enqueued the window after the device was free: that much was the host's.
      const double host_wait = std::clamp(w->issued_ms - prev_end, 0.0, gap);
      // Then the window waited for its chunk's copy (the latest copy of that chunk that
      // ended by the window's start).
      double copy_end = -1;
      for (const TraceSpan* c : copies)
        if (c->index == w->index && c->end_ms <= w->start_ms + 1e-3) copy_end = std::max(copy_end, c->end_ms);
      const double from = prev_end + host_wait;
      const double copy_wait = std::clamp(copy_end - from, 0.0, gap - host_wait);
      s.idle_host_ms += host_wait;
      for (const TraceSpan* h : host) {  // what the host was held up in meanwhile
        const double in = std::min(h->end_ms, prev_end + host_wait) - std::max(h->start_ms, prev_end);
        if (in > 0) s.idle_host_calls_ms[h->call] += in;
      }
      s.idle_copy_ms += copy_wait;
      s.idle_other_ms += gap - host_wait - copy_wait;
    }
    prev_end = std::max(prev_end, w->end_ms);
  }
  s.tail_ms = std::max(0.0, s.span_ms - prev_end);
  s.idle_other_ms += s.tail_ms;
  // A weight copy could start once the last window in its buffer before it and the copy before
  // it on the copy stream had ended; what it waited beyond that was the host's, or queueing.
  for (const TraceSpan* c : copies) {
    double ready = 0;
    for (const TraceSpan* w : windows)
      if (w->slot == c->slot && w->end_ms <= c->start_ms + 1e-3) ready = std::max(ready, w->end_ms);
    for (const TraceSpan* o : copies)
      if (o != c && o->end_ms <= c->start_ms + 1e-3) ready = std::max(ready, o->end_ms);
    const double wait = std::max(0.0, c->start_ms - ready);
    const double late = std::clamp(c->issued_ms - ready, 0.0, wait);
    s.copy_host_late_ms += late;
    s.copy_queued_ms += wait - late;
  }
  return s;
}

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
  const double issued = trace_ ? trace_->host_ms() : 0.0;
  Event start(ctx_.device()), end(ctx_.device());
  start.record(copy);
  slot.views.clear();
  size_t off = 0;
  for (const Tensor& t : chunks_[chunk]) {
    Tensor v = slot.buffer.view(off, t.shape(), t.dtype());
    if (!ctx_.rehearsal()) v.copy_from(t, &copy);
    slot.views.push_back(v);
    off += align_up(t.nbytes());
    stats_.bytes += t.nbytes();
  }
  end.record(copy);
  slot.ready.record(copy);
  slot.chunk = static_cast<int64_t>(chunk);
  ++stats_.copies;
  timings_.push_back(Timing{static_cast<int64_t>(chunk), issued, std::move(start), std::move(end),
                           static_cast<int>(&slot - slots_)});
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
  compute_issued_ms_ = trace_ ? trace_->host_ms() : 0.0;
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
  compute_timings_.push_back(Timing{s.chunk, compute_issued_ms_, std::move(compute_start_), std::move(end), current_});
  s.in_use = false;
  // The chunk after next may go into the other buffer only after this one is released:
  // nothing to do here, acquire() of the next chunk starts it.
}

StreamStats ChunkStreamer::stats() {
  const auto drain = [&](std::vector<Timing>& v, double& total, const char* lane) {
    for (Timing& t : v) {
      t.end.synchronize();
      total += Event::elapsed_ms(t.start, t.end);
      if (trace_) trace_->add(lane, t.chunk, t.issued_ms, std::move(t.start), std::move(t.end), t.slot);
    }
    v.clear();
  };
  drain(timings_, stats_.copy_ms, "copy");
  drain(compute_timings_, stats_.compute_ms, "compute");
  return stats_;
}

void ChunkStreamer::reset_stats() {
  stats();
  stats_ = StreamStats{};
}

}  // namespace onn
