// Host calls that can hold the host up while the device waits for work: the device
// allocator's backend (cudaMalloc; cudaFree, which waits for the whole device), pinned host
// allocations, and waits for streams, events or the device. Each one, while a sink is set,
// is reported with its host start and end; runtime/layer_stream.h's StreamTrace is the sink
// that puts them on a step's timeline beside the device's spans. Without a sink a call costs
// one atomic load.
#pragma once

#include <chrono>
#include <cstdint>

namespace onn {

class HostSpanSink {
 public:
  virtual ~HostSpanSink() = default;
  // call: a static name ("device_free", "stream_sync", ...); bytes: what it allocated or
  // freed, 0 otherwise. May be called from any thread.
  virtual void host_span(const char* call, uint64_t bytes, std::chrono::steady_clock::time_point start,
                         std::chrono::steady_clock::time_point end) = 0;
};

// One process-wide sink (null: none). Returns the previous one.
HostSpanSink* set_host_span_sink(HostSpanSink* sink);

// Reports the enclosing scope as one call to the sink set at its start, if any.
class HostSpan {
 public:
  explicit HostSpan(const char* call, uint64_t bytes = 0);
  ~HostSpan();
  HostSpan(const HostSpan&) = delete;
  HostSpan& operator=(const HostSpan&) = delete;

 private:
  HostSpanSink* sink_;
  const char* call_;
  uint64_t bytes_;
  std::chrono::steady_clock::time_point start_{};
};

}  // namespace onn
