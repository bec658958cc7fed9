// The layer-streaming pipeline: chunks of host tensors (pinned on CUDA) copied one chunk at a
// time into two device buffers on the context's copy stream while the compute stream works on
// the other buffer, ordered by events. The caller declares the order in which it will visit
// the chunks (forward layers, LM-head slices, the backward's reverse order); acquiring one
// starts the copy of the next in that order, so a copy always overlaps the compute before it.
//
//   copy stream:    [copy c1 -> buf B]          [copy c2 -> buf A]      ...
//   compute stream:          [compute c0 on A]          [compute c1 on B]   ...
//
// A buffer is refilled only after the compute stream has released its chunk (event), and the
// compute stream reads a chunk only after its copy has finished (event).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/context.h"
#include "runtime/host_span.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace onn {

struct StreamStats {
  uint64_t bytes = 0;     // host to device
  uint64_t copies = 0;    // chunks copied
  double copy_ms = 0;     // the copies' own time (events on the copy stream)
  double compute_ms = 0;  // compute-stream time between acquiring and releasing chunks
};

// One interval of device work in a trace, in milliseconds since the trace's origin: start and
// end on the device's clock (events), issued on the host's (when the host enqueued the work).
// Lane "host" is a host call that can hold the host up (runtime/host_span.h), all three times
// on the host's clock (issued = start).
struct TraceSpan {
  std::string lane;    // "copy" (weight chunks), "compute" (chunk windows), "act_out", "act_in", "host"
  int64_t index = -1;  // the chunk; the layer for activation copies
  double issued_ms = 0, start_ms = 0, end_ms = 0;
  int slot = -1;         // copies and windows: the device buffer
  std::string call;      // host spans: "device_malloc", "device_free", "stream_sync", ...
  uint64_t bytes = 0;    // host spans: what the call allocated or freed
};

// Where a step's time goes, from its spans. Idle is time the compute stream spends outside
// chunk windows; each gap before a window is split into waiting for the host to enqueue the
// window, waiting for the window's chunk copy, and the rest (work outside windows: the
// embedding gather, the loss, the optimizer; or other waits). Of the wait for the host, the
// part the host spent in calls that hold it up (allocator backend, synchronisations) is named
// per call.
struct TraceSummary {
  double span_ms = 0;          // origin to the last device span's end
  double compute_ms = 0;       // union of compute windows
  double copy_ms = 0;          // union of weight copies
  double act_copy_ms = 0;      // union of activation copies
  double overlap_ms = 0;       // weight copies overlapped by compute windows
  double idle_ms = 0;          // span_ms - compute_ms
  double idle_host_ms = 0, idle_copy_ms = 0, idle_other_ms = 0;
  double tail_ms = 0;          // after the last compute window (part of idle_other_ms)
  // Weight copies that started after their buffer was free (the previous chunk's window in
  // it had ended): because the host enqueued them late, or, enqueued in time, because they
  // queued behind other copies (a shared copy engine).
  double copy_host_late_ms = 0, copy_queued_ms = 0;
  std::map<std::string, double> host_calls_ms;       // host time in each kind of call, the whole step
  std::map<std::string, int64_t> host_calls;         // ... and how many
  std::map<std::string, double> idle_host_calls_ms;  // the part of idle_host_ms spent in them
};
TraceSummary summarize_trace(const std::vector<TraceSpan>& spans);
// [{"lane", "index", "issued_ms", "start_ms", "end_ms"}, ...] and the summary's fields.
nlohmann::ordered_json trace_json(const std::vector<TraceSpan>& spans);
nlohmann::ordered_json trace_summary_json(const TraceSummary& s);

// Records device intervals against an origin (an event on a stream and the host clock at the
// same moment), so device and host times share one axis. Spans are added as event pairs and
// resolved by take(). From begin() to take() it is also the process's host-span sink, so the
// host calls that can hold the host up become "host" spans.
class StreamTrace final : public HostSpanSink {
 public:
  explicit StreamTrace(Device device) : device_(device), origin_(device) {}
  ~StreamTrace() override;
  StreamTrace(const StreamTrace&) = delete;
  StreamTrace& operator=(const StreamTrace&) = delete;
  // The origin: call with the device idle (after a synchronize) so the clocks agree. Drops
  // spans not yet taken.
  void begin(const Stream& stream);
  double host_ms() const;  // host time since the origin
  void add(std::string lane, int64_t index, double issued_ms, Event start, Event end, int slot = -1);
  void host_span(const char* call, uint64_t bytes, std::chrono::steady_clock::time_point start,
                 std::chrono::steady_clock::time_point end) override;
  // Ends the recording of host calls (before waiting for the step's spans: those waits are
  // the trace's own). take() does it too.
  void stop_host_spans();
  // Stops taking host spans, waits for the spans' end events; returns them by start time and
  // forgets them.
  std::vector<TraceSpan> take();

 private:
  struct Pending {
    std::string lane;
    int64_t index;
    double issued_ms;
    Event start, end;
    int slot;
  };
  Device device_;
  Event origin_;
  std::chrono::steady_clock::time_point host_origin_{};
  bool begun_ = false;
  std::vector<Pending> pending_;
  std::mutex host_mu_;  // host spans may come from any thread
  std::vector<TraceSpan> host_;
  bool sink_ = false;  // registered as the host-span sink
  HostSpanSink* previous_sink_ = nullptr;
};

class ChunkStreamer {
 public:
  // chunks[i]: the host tensors of chunk i. Both device buffers hold the largest chunk (each
  // tensor 256-byte aligned) and come from ctx.allocator(), so they count against its budget.
  ChunkStreamer(Context& ctx, std::vector<std::vector<Tensor>> chunks);
  ~ChunkStreamer();
  ChunkStreamer(const ChunkStreamer&) = delete;
  ChunkStreamer& operator=(const ChunkStreamer&) = delete;

  size_t chunks() const { return chunks_.size(); }
  size_t buffer_bytes() const { return buffer_bytes_; }
  // Bytes of one chunk's tensors.
  uint64_t chunk_bytes(size_t i) const;

  // The visiting order for the following acquire calls (a chunk may repeat; a chunk that is
  // still in a buffer is not copied again). Starts the first copy.
  void plan(std::vector<size_t> order);
  // The next chunk of the order: device views of its tensors, in order. Later work on the
  // compute stream waits for its copy; the copy of the chunk after it starts now.
  const std::vector<Tensor>& acquire(size_t chunk);
  // Work enqueued on the compute stream so far is the last to read the chunk acquired last.
  void release();

  StreamStats stats();  // waits for the copies issued so far
  void reset_stats();
  // With a trace, every copy and compute window also becomes a span of it (handed over by
  // stats()); null: none.
  void set_trace(StreamTrace* trace) { trace_ = trace; }
  StreamTrace* trace() const { return trace_; }

 private:
  struct Slot {
    Tensor buffer;
    int64_t chunk = -1;
    std::vector<Tensor> views;
    Event ready, freed;
    bool freed_recorded = false;
    bool in_use = false;
  };
  void load(size_t chunk, Slot& slot);
  Slot* find(size_t chunk);

  Context& ctx_;
  std::vector<std::vector<Tensor>> chunks_;
  size_t buffer_bytes_ = 0;
  Slot slots_[2];
  int current_ = -1;  // the slot acquired last
  std::vector<size_t> order_;
  size_t pos_ = 0;
  struct Timing {
    int64_t chunk;
    double issued_ms;
    Event start, end;
    int slot;
  };
  std::vector<Timing> timings_, compute_timings_;
  Event compute_start_;
  double compute_issued_ms_ = 0;
  StreamStats stats_;
  StreamTrace* trace_ = nullptr;
};

}  // namespace onn
