// Context: everything an op needs to run on one device: the device, its allocator, a
// compute stream and a copy stream, and (on CUDA) the cuBLAS / cuBLASLt handles with a
// workspace from the device allocator (so it counts against the budget).
#pragma once

#include <memory>

#include "runtime/allocator.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

struct cublasContext;
struct cublasLtContext;

namespace onn {

class Context {
 public:
  // 32 MiB: NVIDIA's recommendation for cuBLASLt workspaces on Hopper.
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;

  explicit Context(Device device = default_device(), size_t workspace_bytes = kDefaultWorkspaceBytes);
  // With an allocator of its own (same device) for every allocation the ops and the model
  // make: a CachingAllocator over host memory turns the CPU backend into a device with a
  // budget (the low-VRAM scheduler's tests).
  Context(Device device, Allocator& allocator, size_t workspace_bytes = kDefaultWorkspaceBytes);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Device device() const { return device_; }
  Allocator& allocator() const { return *allocator_; }
  // The allocator as a budgeted caching allocator (a CUDA device's, or a simulated device's);
  // null where it is not one (the CPU's plain allocator).
  CachingAllocator* caching_allocator() const { return dynamic_cast<CachingAllocator*>(allocator_); }
  Stream& compute() { return compute_; }
  Stream& copy() { return copy_; }
  cublasContext* cublas() const { return cublas_; }
  cublasLtContext* cublaslt() const { return cublaslt_; }
  void* workspace() const { return workspace_.defined() ? workspace_.data() : nullptr; }
  size_t workspace_bytes() const { return workspace_.defined() ? workspace_.nbytes() : 0; }
  void synchronize();

  // A rehearsal of a CUDA run on a CPU context: every op validates its arguments by the CUDA
  // backend's rules and makes the allocations its front makes, but computes nothing, and the
  // layer streamer copies nothing. The allocator then sees a CUDA run's requests in order
  // (less the CUDA kernels' own small temporaries) in seconds, for models far too large to
  // compute here: the planner's peak is checked against it. Tensor values are meaningless.
  // Also takes the cuBLASLt workspace a CUDA context holds (workspace_bytes).
  void start_rehearsal(size_t workspace_bytes = kDefaultWorkspaceBytes);
  bool rehearsal() const { return rehearsal_; }

 private:
  Device device_;
  bool rehearsal_ = false;
  Allocator* allocator_;
  Stream compute_;
  Stream copy_;
  cublasContext* cublas_ = nullptr;
  cublasLtContext* cublaslt_ = nullptr;
  Tensor workspace_;  // (workspace_bytes,) u8 on the device
};

}  // namespace onn
