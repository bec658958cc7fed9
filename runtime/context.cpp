// Context construction and teardown.
#include "runtime/context.h"

#include "runtime/cuda_backend.h"
#include "runtime/error.h"

namespace onn {

Context::Context(Device device, size_t workspace_bytes) : Context(device, allocator_for(device), workspace_bytes) {}

Context::Context(Device device, Allocator& allocator, size_t workspace_bytes)
    : device_(device), allocator_(&allocator), compute_(device), copy_(device) {
  ONN_CHECK_ARG(allocator.device() == device, "Context on ", device.str(), " given the allocator of ",
                allocator.device().str());
  if (device.is_cuda()) {
    cublas_ = cuda::cublas_create(device.index, compute_.cuda_stream());
    cublaslt_ = cuda::cublaslt_create();
    if (workspace_bytes > 0) {
      workspace_ = Tensor::empty(Shape{static_cast<int64_t>(workspace_bytes)}, DType::u8, *allocator_);
    }
  }
}

Context::~Context() {
  try {
    if (device_.is_cuda()) compute_.synchronize();
    if (cublas_ != nullptr) cuda::cublas_destroy(cublas_);
    if (cublaslt_ != nullptr) cuda::cublaslt_destroy(cublaslt_);
  } catch (...) {
  }
}

void Context::start_rehearsal(size_t workspace_bytes) {
  ONN_CHECK_ARG(device_.is_cpu(), "a rehearsal runs on a CPU context, not ", device_.str());
  rehearsal_ = true;
  if (workspace_bytes > 0 && !workspace_.defined())
    workspace_ = Tensor::empty(Shape{static_cast<int64_t>(workspace_bytes)}, DType::u8, *allocator_);
}

void Context::synchronize() {
  compute_.synchronize();
  copy_.synchronize();
}

}  // namespace onn
