// The MPI backend: CPU ranks (and the host side of CUDA ranks). The gradient sum is ours, in a
// fixed order, over MPI's data movement: each rank owns one segment of the buffer, receives
// every rank's copy of it (all-to-all), folds them in rank order, and the folded segments are
// gathered back (all-gather): the traffic of a ring all-reduce, and every rank holds the same
// bits whatever the timing. Every collective is non-blocking and polled against the
// timeout, so a rank that stops ends the run with one line instead of a hang.
//
// Overlap: start_all_reduce_sum queues host tensors for a worker thread, which then makes every
// MPI call until finish_all_reduce has seen the queue drained (MPI_THREAD_SERIALIZED: one thread
// in MPI at a time); the trainer queues each layer's gradients as the backward leaves the layer.
// Every other collective drains the queue first. Where the library gives less than SERIALIZED,
// and for device tensors, the sum runs at once.
// The C API only: OpenMPI's deprecated C++ bindings would need libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "runtime/dist/dist.h"
#include "runtime/dtype.h"
#include "runtime/parallel.h"

namespace onn::dist {
namespace {

// Bytes per reduction call: bounds the receive buffer and keeps MPI's int counts in range.
constexpr size_t kChunkBytes = size_t{32} << 20;
// Tensors smaller than this are copied into one buffer and summed together.
constexpr size_t kBucketBytes = size_t{4} << 20;

void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(msg, static_cast<size_t>(len)));
}

size_t element_bytes(DType dt) {
  ONN_CHECK_ARG(dt == DType::f32 || dt == DType::f64 || dt == DType::bf16,
                "all_reduce_sum: F32, F64 or BF16 tensors, not ", dtype_name(dt));
  return dtype_size(dt);
}

// Elements per part of the fold on the thread pool.
constexpr int64_t kFoldGrain = 1 << 16;

// dst[i] = ((src[0][i] + src[1][i]) + src[2][i]) + ..., for `parts` arrays of n elements laid
// out one after another in src, on the pool (each element is one rank-ordered fold, so the
// split changes no bit). BF16 is folded in F32 and rounded once.
template <typename T>
void fold_as(T* dst, const T* src, int64_t n, int parts) {
  parallel_for(n, kFoldGrain, [&](int64_t, int64_t begin, int64_t end) {
    std::copy(src + begin, src + end, dst + begin);
    for (int p = 1; p < parts; ++p) {
      const T* s = src + static_cast<int64_t>(p) * n;
      for (int64_t i = begin; i < end; ++i) dst[i] += s[i];
    }
  });
}

void fold(void* dst, const void* src, size_t n, int parts, DType dt) {
  const auto count = static_cast<int64_t>(n);
  if (dt == DType::f64) return fold_as(static_cast<double*>(dst), static_cast<const double*>(src), count, parts);
  if (dt == DType::f32) return fold_as(static_cast<float*>(dst), static_cast<const float*>(src), count, parts);
  std::vector<float> wide(n * static_cast<size_t>(parts)), sum(n);
  const auto* bits = static_cast<const uint16_t*>(src);
  for (size_t i = 0; i < wide.size(); ++i) wide[i] = bf16_bits_to_f32(bits[i]);
  fold_as(sum.data(), wide.data(), count, parts);
  for (size_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16_bits(sum[i]);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const DistOptions& opt) : timeout_(opt.timeout_s) {
    int provided = 0;
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
    overlap_ = provided >= MPI_THREAD_SERIALIZED;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // The ranks on this node: those with this host's name (a gather under the time-out, where
    // MPI_Comm_split_type would wait for a missing rank forever).
    char host[MPI_MAX_PROCESSOR_NAME] = {};
    int len = 0;
    mpi_check(MPI_Get_processor_name(host, &len), "MPI_Get_processor_name");
    const std::vector<std::string> hosts = all_gather(std::string(host, static_cast<size_t>(len)));
    local_rank_ = static_cast<int>(std::count(hosts.begin(), hosts.begin() + rank_, hosts[static_cast<size_t>(rank_)]));
    local_size_ = static_cast<int>(std::count(hosts.begin(), hosts.end(), hosts[static_cast<size_t>(rank_)]));
  }
  ~MpiCommunicator() override {
    stop_worker();
    MPI_Finalize();
  }

  CommBackend backend() const override { return CommBackend::mpi; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  void all_reduce_sum(Context& ctx, const std::vector<Tensor>& tensors) override;
  void start_all_reduce_sum(Context& ctx, const std::vector<Tensor>& tensors) override;
  void finish_all_reduce(Context& ctx) override;

  std::vector<std::string> all_gather(const std::string& mine) override {
    drain();
    const auto n = static_cast<int64_t>(mine.size());
    std::vector<int64_t> sizes(static_cast<size_t>(size_));
    MPI_Request req;
    mpi_check(MPI_Iallgather(&n, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, MPI_COMM_WORLD, &req), "MPI_Iallgather");
    wait(req, "all-gather");
    std::vector<int> counts, displs;
    int64_t total = 0;
    for (int64_t s : sizes) {
      ONN_CHECK_ARG(s >= 0 && total + s < (int64_t{1} << 30), "all_gather: more than 1 GiB of host bytes");
      counts.push_back(static_cast<int>(s));
      displs.push_back(static_cast<int>(total));
      total += s;
    }
    std::string all(static_cast<size_t>(total), '\0');
    mpi_check(MPI_Iallgatherv(mine.data(), static_cast<int>(n), MPI_BYTE, all.data(), counts.data(), displs.data(),
                              MPI_BYTE, MPI_COMM_WORLD, &req),
              "MPI_Iallgatherv");
    wait(req, "all-gather");
    std::vector<std::string> out;
    for (size_t r = 0; r < sizes.size(); ++r) out.push_back(all.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(counts[r])));
    return out;
  }

  void broadcast(std::string& bytes, int root) override { bytes = all_gather(rank_ == root ? bytes : "")[static_cast<size_t>(root)]; }

  void barrier() override {
    drain();
    MPI_Request req;
    mpi_check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
    wait(req, "barrier");
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(nullptr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  // Polls `req` until it completes or the timeout passes; then ends every rank.
  void wait(MPI_Request& req, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      int done = 0;
      mpi_check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_) {
        std::fprintf(stderr, "onn: rank %d: the %s did not complete within %g s (--comm-timeout): another rank stopped "
                             "or is stuck; ending every rank\n", rank_, what, timeout_);
        abort(1);
      }
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // The rank-ordered sum of n elements at `data` (host memory), in place.
  void reduce(void* data, size_t n, DType dt);
  void reduce_host(const std::vector<Tensor>& tensors);

  // The worker: sums queued host tensors in queue order; the first error is kept for drain().
  void work();
  void drain();
  void stop_worker();

  double timeout_;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::vector<uint8_t> recv_, bucket_;  // the reductions' buffers (one thread in MPI at a time)

  bool overlap_ = false;  // MPI_THREAD_SERIALIZED provided
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<Tensor>> queue_;
  bool busy_ = false, stopping_ = false;
  std::exception_ptr error_;
};

void MpiCommunicator::work() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping
    std::vector<Tensor> job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    const bool failed = error_ != nullptr;
    l.unlock();
    std::exception_ptr e;
    try {
      if (!failed) reduce_host(job);  // after a failure the queue only empties
    } catch (...) {
      e = std::current_exception();
    }
    l.lock();
    if (e && !error_) error_ = e;
    busy_ = false;
    cv_.notify_all();
  }
}

void MpiCommunicator::drain() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return queue_.empty() && !busy_; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void MpiCommunicator::stop_worker() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void MpiCommunicator::start_all_reduce_sum(Context& ctx, const std::vector<Tensor>& tensors) {
  if (tensors.empty()) return;
  if (!overlap_ || !tensors[0].device().is_cpu()) return all_reduce_sum(ctx, tensors);
  for (const Tensor& t : tensors) element_bytes(t.dtype());  // refused here, not on the worker
  if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(tensors);
  }
  cv_.notify_all();
}

void MpiCommunicator::finish_all_reduce(Context&) { drain(); }

void MpiCommunicator::reduce(void* data, size_t n, DType dt) {
  const size_t es = element_bytes(dt);
  const auto parts = static_cast<size_t>(size_);
  const size_t seg = (n + parts - 1) / parts;  // elements per segment; rank r owns segment r
  std::vector<int> counts(parts), displs(parts);
  for (size_t r = 0; r < parts; ++r) {
    const size_t begin = std::min(n, r * seg);
    counts[r] = static_cast<int>((std::min(n, begin + seg) - begin) * es);
    displs[r] = static_cast<int>(begin * es);
  }
  const auto me = static_cast<size_t>(rank_);
  const int mine = counts[me];
  recv_.resize(parts * static_cast<size_t>(mine));
  std::vector<int> rcounts(parts, mine), rdispls(parts);
  for (size_t r = 0; r < parts; ++r) rdispls[r] = static_cast<int>(r * static_cast<size_t>(mine));
  MPI_Request req;
  mpi_check(MPI_Ialltoallv(data, counts.data(), displs.data(), MPI_BYTE, recv_.data(), rcounts.data(), rdispls.data(),
                           MPI_BYTE, MPI_COMM_WORLD, &req),
            "MPI_Ialltoallv");
  wait(req, "gradient all-reduce");
  fold(static_cast<uint8_t*>(data) + displs[me], recv_.data(), static_cast<size_t>(mine) / es, size_, dt);
  mpi_check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_BYTE, data, counts.data(), displs.data(), MPI_BYTE, MPI_COMM_WORLD, &req),
            "MPI_Iallgatherv");
  wait(req, "gradient all-reduce");
}

// Runs of tensors adjacent in memory (LoRA's packed gradients) are one buffer; a large one is
// summed in place a chunk at a time, small ones are copied into a bucket and summed together.
void MpiCommunicator::reduce_host(const std::vector<Tensor>& tensors) {
  struct Run {
    uint8_t* data;
    size_t bytes;
    DType dtype;
  };
  std::vector<Run> runs;
  for (const Tensor& t : tensors) {
    element_bytes(t.dtype());
    auto* p = static_cast<uint8_t*>(t.data());
    if (!runs.empty() && runs.back().dtype == t.dtype() && runs.back().data + runs.back().bytes == p) runs.back().bytes += t.nbytes();
    else runs.push_back({p, t.nbytes(), t.dtype()});
  }
  std::vector<Run> bucketed;
  size_t filled = 0;
  const auto flush = [&] {
    if (filled == 0) return;
    reduce(bucket_.data(), filled / dtype_size(bucketed[0].dtype), bucketed[0].dtype);
    size_t at = 0;
    for (const Run& r : bucketed) {
      std::memcpy(r.data, bucket_.data() + at, r.bytes);
      at += r.bytes;
    }
    bucketed.clear();
    filled = 0;
  };
  for (const Run& r : runs) {
    if (r.bytes >= kBucketBytes) {
      const size_t es = dtype_size(r.dtype), step = kChunkBytes / es * es;
      for (size_t at = 0; at < r.bytes; at += step) reduce(r.data + at, std::min(step, r.bytes - at) / es, r.dtype);
      continue;
    }
    if (filled + r.bytes > kBucketBytes || (!bucketed.empty() && bucketed[0].dtype != r.dtype)) flush();
    bucket_.resize(std::max(bucket_.size(), kBucketBytes));
    std::memcpy(bucket_.data() + filled, r.data, r.bytes);
    filled += r.bytes;
    bucketed.push_back(r);
  }
  flush();
}

// Device tensors (a CUDA rank without NCCL) go through host copies.
void MpiCommunicator::all_reduce_sum(Context& ctx, const std::vector<Tensor>& tensors) {
  if (tensors.empty()) return;
  drain();
  if (tensors[0].device().is_cpu()) {
    reduce_host(tensors);
    return;
  }
  std::vector<Tensor> host;
  for (const Tensor& t : tensors) host.push_back(t.to(Device::cpu(), &ctx.compute()));
  ctx.compute().synchronize();
  reduce_host(host);
  for (size_t i = 0; i < tensors.size(); ++i) {
    Tensor t = tensors[i];
    t.copy_from(host[i], &ctx.compute());
  }
  ctx.compute().synchronize();  // the host copies are freed on return
}

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const DistOptions& opt) {
  return std::make_unique<MpiCommunicator>(opt);
}

}  // namespace onn::dist
