// The NCCL backend: CUDA ranks, one GPU each, within and across nodes. The communicator is
// opened over MPI (rank 0's ncclUniqueId broadcast to the others), which also carries the
// host bytes and host tensors. Device sums are one grouped ncclAllReduce per call on a stream of
// their own that waits for the compute stream's work so far: every rank gets the same bits, in
// NCCL's order (ring or tree), not a fixed fold. start_all_reduce_sum returns once the sum is
// queued, so it runs while the compute stream goes on with the backward; finish_all_reduce
// makes the compute stream wait for it and polls it against the timeout (aborting the
// communicator when it passes).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "runtime/cuda_check.h"
#include "runtime/dist/dist.h"

#define ONN_NCCL_CHECK(stmt)                                                                         \
  do {                                                                                               \
    const ncclResult_t onn_nr_ = (stmt);                                                             \
    if (onn_nr_ != ncclSuccess)                                                                      \
      throw ::onn::CudaError(::onn::detail::format_check_failure("NCCL call", #stmt, __FILE__, __LINE__, \
                                                                 ncclGetErrorString(onn_nr_)));      \
  } while (0)

namespace onn::dist {
namespace {

ncclDataType_t nccl_type(DType dt) {
  switch (dt) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    default: throw InvalidArgument("all_reduce_sum: F32, F64 or BF16 tensors, not " + std::string(dtype_name(dt)));
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, Device device, const DistOptions& opt)
      : host_(std::move(host)), timeout_(opt.timeout_s) {
    ncclUniqueId id;
    std::string bytes;
    if (host_->lead()) {
      ONN_NCCL_CHECK(ncclGetUniqueId(&id));
      bytes.assign(reinterpret_cast<const char*>(&id), sizeof id);
    }
    host_->broadcast(bytes, 0);
    ONN_ASSERT(bytes.size() == sizeof id, "the NCCL unique id has ", bytes.size(), " bytes");
    std::memcpy(&id, bytes.data(), sizeof id);
    ONN_CUDA_CHECK(cudaSetDevice(device.index));
    ONN_NCCL_CHECK(ncclCommInitRank(&comm_, host_->size(), id, host_->rank()));
  }
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  CommBackend backend() const override { return CommBackend::nccl; }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  int local_rank() const override { return host_->local_rank(); }
  int local_size() const override { return host_->local_size(); }

  void all_reduce_sum(Context& ctx, const std::vector<Tensor>& tensors) override {
    start_all_reduce_sum(ctx, tensors);
    finish_all_reduce(ctx);
  }

  void start_all_reduce_sum(Context& ctx, const std::vector<Tensor>& tensors) override {
    if (tensors.empty()) return;
    if (tensors[0].device().is_cpu()) return host_->all_reduce_sum(ctx, tensors);
    if (stream_ == nullptr) {
      ONN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      ONN_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      ONN_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    }
    ONN_CUDA_CHECK(cudaEventRecord(ready_, ctx.compute().cuda_stream()));
    ONN_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    ONN_NCCL_CHECK(ncclGroupStart());
    for (const Tensor& t : tensors)
      ONN_NCCL_CHECK(ncclAllReduce(t.data(), t.data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), ncclSum,
                                   comm_, stream_));
    ONN_NCCL_CHECK(ncclGroupEnd());
    pending_ = true;
  }

  void finish_all_reduce(Context& ctx) override {
    if (!pending_) return;
    pending_ = false;
    ONN_CUDA_CHECK(cudaEventRecord(done_, stream_));
    ONN_CUDA_CHECK(cudaStreamWaitEvent(ctx.compute().cuda_stream(), done_, 0));
    wait(stream_);
  }

  std::vector<std::string> all_gather(const std::string& mine) override { return host_->all_gather(mine); }
  void broadcast(std::string& bytes, int root) override { host_->broadcast(bytes, root); }
  void barrier() override { host_->barrier(); }
  [[noreturn]] void abort(int code) override {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    host_->abort(code);
    std::_Exit(code);  // not reached
  }

 private:
  void wait(cudaStream_t stream) {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t e = cudaStreamQuery(stream);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) ONN_CUDA_CHECK(e);
      ncclResult_t async = ncclSuccess;
      ONN_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
      ONN_NCCL_CHECK(async);
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_) {
        std::fprintf(stderr, "onn: rank %d: the NCCL gradient all-reduce did not complete within %g s (--comm-timeout): "
                             "another rank stopped or is stuck; ending every rank\n", rank(), timeout_);
        abort(1);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  std::unique_ptr<Communicator> host_;
  double timeout_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;  // the sums' stream (made on the first)
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  bool pending_ = false;  // sums queued since the last finish_all_reduce
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, Device device,
                                                     const DistOptions& opt) {
  return std::make_unique<NcclCommunicator>(std::move(host), device, opt);
}

}  // namespace onn::dist
