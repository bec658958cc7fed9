// Stream and Event on both backends.
#include "runtime/stream.h"

#include <utility>

#include "runtime/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/host_span.h"

namespace onn {

Stream::Stream(Device device) : device_(device) {
  if (device.is_cuda()) stream_ = cuda::stream_create(device.index);
}

Stream::~Stream() {
  if (stream_ != nullptr) {
    try {
      cuda::stream_destroy(stream_);
    } catch (...) {
    }
  }
}

Stream::Stream(Stream&& other) noexcept
    : device_(other.device_), stream_(std::exchange(other.stream_, nullptr)) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) {
      try {
        cuda::stream_destroy(stream_);
      } catch (...) {
      }
    }
    device_ = other.device_;
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void Stream::synchronize() const {
  if (stream_ == nullptr) return;
  const HostSpan span("stream_sync");
  cuda::stream_synchronize(stream_);
}

void Stream::wait(const Event& event) const {
  ONN_CHECK_ARG(event.device() == device_, "stream on ", device_.str(), " cannot wait for an event on ",
                event.device().str());
  if (stream_ != nullptr) cuda::stream_wait_event(stream_, event.cuda_event());
}

Event::Event(Device device, bool timing) : device_(device) {
  if (device.is_cuda()) event_ = cuda::event_create(device.index, timing);
}

Event::~Event() {
  if (event_ != nullptr) {
    try {
      cuda::event_destroy(event_);
    } catch (...) {
    }
  }
}

Event::Event(Event&& other) noexcept
    : device_(other.device_),
      event_(std::exchange(other.event_, nullptr)),
      cpu_time_(other.cpu_time_),
      recorded_(other.recorded_) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) {
      try {
        cuda::event_destroy(event_);
      } catch (...) {
      }
    }
    device_ = other.device_;
    event_ = std::exchange(other.event_, nullptr);
    cpu_time_ = other.cpu_time_;
    recorded_ = other.recorded_;
  }
  return *this;
}

void Event::record(const Stream& stream) {
  ONN_CHECK_ARG(stream.device() == device_, "event on ", device_.str(), " recorded on a stream on ",
                stream.device().str());
  if (event_ != nullptr) {
    cuda::event_record(event_, stream.cuda_stream());
  } else {
    cpu_time_ = std::chrono::steady_clock::now();
  }
  recorded_ = true;
}

void Event::synchronize() const {
  if (event_ == nullptr) return;
  const HostSpan span("event_sync");
  cuda::event_synchronize(event_);
}

bool Event::ready() const { return event_ == nullptr || cuda::event_query(event_); }

float Event::elapsed_ms(const Event& start, const Event& end) {
  ONN_CHECK_ARG(start.recorded_ && end.recorded_, "elapsed_ms needs two recorded events");
  ONN_CHECK_ARG(start.device_ == end.device_, "elapsed_ms across devices");
  if (start.event_ != nullptr) return cuda::event_elapsed_ms(start.event_, end.event_);
  return std::chrono::duration<float, std::milli>(end.cpu_time_ - start.cpu_time_).count();
}

}  // namespace onn
