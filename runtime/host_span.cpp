// The process-wide host-span sink (runtime/host_span.h).
#include "runtime/host_span.h"

#include <atomic>

namespace onn {

namespace {
std::atomic<HostSpanSink*> g_sink{nullptr};
}

HostSpanSink* set_host_span_sink(HostSpanSink* sink) { return g_sink.exchange(sink, std::memory_order_acq_rel); }

HostSpan::HostSpan(const char* call, uint64_t bytes)
    : sink_(g_sink.load(std::memory_order_acquire)), call_(call), bytes_(bytes) {
  if (sink_ != nullptr) start_ = std::chrono::steady_clock::now();
}

HostSpan::~HostSpan() {
  if (sink_ == nullptr) return;
  try {
    sink_->host_span(call_, bytes_, start_, std::chrono::steady_clock::now());
  } catch (...) {  // a trace that cannot record must not turn a free or a wait into an error
  }
}

}  // namespace onn
