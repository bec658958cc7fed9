// Stream and Event: RAII over CUDA streams and events. On the CPU a stream runs work
// synchronously (there is nothing to enqueue) and an event is a host timestamp, so code
// written against streams runs unchanged on both backends.
#pragma once

#include <chrono>

#include "runtime/device.h"

struct CUstream_st;
struct CUevent_st;

namespace onn {

class Event;

class Stream {
 public:
  explicit Stream(Device device = Device::cpu());
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  Device device() const { return device_; }
  // The CUDA stream, nullptr on the CPU.
  CUstream_st* cuda_stream() const { return stream_; }
  void synchronize() const;
  // Later work on this stream waits for the event.
  void wait(const Event& event) const;

 private:
  Device device_;
  CUstream_st* stream_ = nullptr;
};

class Event {
 public:
  explicit Event(Device device = Device::cpu(), bool timing = true);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  Device device() const { return device_; }
  CUevent_st* cuda_event() const { return event_; }
  void record(const Stream& stream);
  void synchronize() const;
  // True once all work before record() has finished.
  bool ready() const;
  // Milliseconds between two recorded events of the same device.
  static float elapsed_ms(const Event& start, const Event& end);

 private:
  Device device_;
  CUevent_st* event_ = nullptr;
  std::chrono::steady_clock::time_point cpu_time_{};
  bool recorded_ = false;
};

}  // namespace onn
