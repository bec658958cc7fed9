// CUDA builds: the runtime's device operations on top of the CUDA runtime API, and the
// error formatting behind ONN_CUDA_CHECK / ONN_CUBLAS_CHECK.
#include "runtime/cuda_backend.h"

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "runtime/cuda_check.h"
#include "runtime/host_span.h"

namespace onn::detail {

void throw_cuda_error(cudaError_t err, const char* stmt, const char* file, int line) {
  const std::string detail = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  const std::string msg = format_check_failure("CUDA call", stmt, file, line, detail);
  if (err == cudaErrorMemoryAllocation) throw OutOfMemory(msg);
  throw CudaError(msg);
}

void throw_cublas_error(cublasStatus_t st, const char* stmt, const char* file, int line) {
  const std::string detail = std::string(cublasGetStatusName(st)) + ": " + cublasGetStatusString(st);
  throw BlasError(format_check_failure("cuBLAS call", stmt, file, line, detail));
}

}  // namespace onn::detail

namespace onn::cuda {

namespace {
cudaMemcpyKind to_cuda(CopyKind k) {
  switch (k) {
    case CopyKind::host_to_device: return cudaMemcpyHostToDevice;
    case CopyKind::device_to_host: return cudaMemcpyDeviceToHost;
    case CopyKind::device_to_device: return cudaMemcpyDeviceToDevice;
    case CopyKind::host_to_host: return cudaMemcpyHostToHost;
    case CopyKind::default_kind: return cudaMemcpyDefault;
  }
  return cudaMemcpyDefault;
}

// Switches the current device for the lifetime of the guard.
class DeviceGuard {
 public:
  explicit DeviceGuard(int dev) {
    ONN_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != dev) ONN_CUDA_CHECK(cudaSetDevice(dev));
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};
}  // namespace

bool compiled_in() { return true; }

int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no driver / no device" error
      return 0;
    }
    return n;
  }();
  return count;
}

int current_device_or_minus_one() {
  if (device_count() == 0) return -1;
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) return -1;
  return dev;
}

void set_device(int dev) { ONN_CUDA_CHECK(cudaSetDevice(dev)); }

DeviceProps properties(int dev) {
  cudaDeviceProp p{};
  ONN_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  DeviceProps out;
  out.name = p.name;
  out.sm_count = p.multiProcessorCount;
  out.cc_major = p.major;
  out.cc_minor = p.minor;
  out.total_bytes = p.totalGlobalMem;
  out.l2_bytes = static_cast<size_t>(p.l2CacheSize);
  out.memory_bus_bits = p.memoryBusWidth;
  int clock_khz = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev) == cudaSuccess) {
    out.memory_clock_khz = clock_khz;
  } else {
    cudaGetLastError();
  }
  return out;
}

void mem_info(int dev, size_t* free_bytes, size_t* total_bytes) {
  DeviceGuard g(dev);
  ONN_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

static std::string version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::string driver_version_string() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess || v == 0) return "none";
  return version_string(v);
}

std::string pci_bus_id(int dev) {
  char id[32] = {};
  if (cudaDeviceGetPCIBusId(id, sizeof id, dev) != cudaSuccess) return "";
  return id;
}

std::string runtime_version_string() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return "unknown";
  return version_string(v);
}

void* device_malloc(int dev, size_t bytes) {
  DeviceGuard g(dev);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;
  }
  ONN_CUDA_CHECK(err);
  return p;
}

void device_free(int dev, void* ptr) {
  DeviceGuard g(dev);
  ONN_CUDA_CHECK(cudaFree(ptr));
}

void* host_malloc_pinned(size_t bytes) {
  void* p = nullptr;
  ONN_CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocPortable));
  return p;
}

void host_free_pinned(void* ptr) { ONN_CUDA_CHECK(cudaFreeHost(ptr)); }

void memcpy_async(void* dst, const void* src, size_t bytes, CopyKind kind, CUstream_st* stream) {
  ONN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, to_cuda(kind), stream));
}

void memset_async(void* dst, int value, size_t bytes, CUstream_st* stream) {
  ONN_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, stream));
}

CUstream_st* stream_create(int dev) {
  DeviceGuard g(dev);
  cudaStream_t s = nullptr;
  ONN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void stream_destroy(CUstream_st* s) { ONN_CUDA_CHECK(cudaStreamDestroy(s)); }
void stream_synchronize(CUstream_st* s) { ONN_CUDA_CHECK(cudaStreamSynchronize(s)); }
void stream_wait_event(CUstream_st* s, CUevent_st* e) { ONN_CUDA_CHECK(cudaStreamWaitEvent(s, e, 0)); }

CUevent_st* event_create(int dev, bool timing) {
  DeviceGuard g(dev);
  cudaEvent_t e = nullptr;
  ONN_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

void event_destroy(CUevent_st* e) { ONN_CUDA_CHECK(cudaEventDestroy(e)); }
void event_record(CUevent_st* e, CUstream_st* s) { ONN_CUDA_CHECK(cudaEventRecord(e, s)); }
void event_synchronize(CUevent_st* e) { ONN_CUDA_CHECK(cudaEventSynchronize(e)); }

bool event_query(CUevent_st* e) {
  const cudaError_t err = cudaEventQuery(e);
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  ONN_CUDA_CHECK(err);
  return true;
}

float event_elapsed_ms(CUevent_st* start, CUevent_st* end) {
  float ms = 0.f;
  ONN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
  return ms;
}

void device_synchronize(int dev) {
  DeviceGuard g(dev);
  const HostSpan span("device_sync");
  ONN_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace onn::cuda

#include <cublasLt.h>
#include <cublas_v2.h>

namespace onn::cuda {

cublasContext* cublas_create(int dev, CUstream_st* stream) {
  DeviceGuard g(dev);
  cublasHandle_t h = nullptr;
  ONN_CUBLAS_CHECK(cublasCreate(&h));
  ONN_CUBLAS_CHECK(cublasSetStream(h, stream));
  return h;
}

void cublas_destroy(cublasContext* h) { ONN_CUBLAS_CHECK(cublasDestroy(h)); }

cublasLtContext* cublaslt_create() {
  cublasLtHandle_t h = nullptr;
  ONN_CUBLAS_CHECK(cublasLtCreate(&h));
  return h;
}

void cublaslt_destroy(cublasLtContext* h) { ONN_CUBLAS_CHECK(cublasLtDestroy(h)); }

}  // namespace onn::cuda
