// The thin layer between the runtime and the CUDA runtime library. Two implementations:
// cuda/cuda_backend.cpp (CUDA builds) and cuda_backend_none.cpp (CPU-only builds, where
// device_count() is 0 and everything else throws). Keeps #ifdefs out of the runtime.
#pragma once

#include <cstddef>
#include <string>

struct CUstream_st;
struct CUevent_st;

namespace onn::cuda {

bool compiled_in();
// 0 when there is no driver or no device (never throws).
int device_count();
int current_device_or_minus_one();
void set_device(int dev);

struct DeviceProps {
  std::string name;
  int sm_count = 0;
  int cc_major = 0;
  int cc_minor = 0;
  size_t total_bytes = 0;
  size_t l2_bytes = 0;
  int memory_bus_bits = 0;
  int memory_clock_khz = 0;
};
DeviceProps properties(int dev);
void mem_info(int dev, size_t* free_bytes, size_t* total_bytes);
std::string driver_version_string();
std::string runtime_version_string();
// "0000:65:00.0": how NVML finds the same device; empty when unknown (never throws).
std::string pci_bus_id(int dev);

// Raw allocation. malloc returns nullptr when the device is out of memory (so the caching
// allocator can free its cache and retry); other failures throw.
void* device_malloc(int dev, size_t bytes);
void device_free(int dev, void* ptr);
void* host_malloc_pinned(size_t bytes);
void host_free_pinned(void* ptr);

enum class CopyKind { host_to_device, device_to_host, device_to_device, host_to_host, default_kind };
void memcpy_async(void* dst, const void* src, size_t bytes, CopyKind kind, CUstream_st* stream);
void memset_async(void* dst, int value, size_t bytes, CUstream_st* stream);

CUstream_st* stream_create(int dev);
void stream_destroy(CUstream_st* s);
void stream_synchronize(CUstream_st* s);
void stream_wait_event(CUstream_st* s, CUevent_st* e);
CUevent_st* event_create(int dev, bool timing);
void event_destroy(CUevent_st* e);
void event_record(CUevent_st* e, CUstream_st* s);
void event_synchronize(CUevent_st* e);
bool event_query(CUevent_st* e);
float event_elapsed_ms(CUevent_st* start, CUevent_st* end);
void device_synchronize(int dev);

}  // namespace onn::cuda

struct cublasContext;
struct cublasLtContext;

namespace onn::cuda {
cublasContext* cublas_create(int dev, CUstream_st* stream);
void cublas_destroy(cublasContext* h);
cublasLtContext* cublaslt_create();
void cublaslt_destroy(cublasLtContext* h);
}  // namespace onn::cuda

namespace onn::cuda {
// Median GB/s of `reps` copies of `bytes` (pinned or pageable host memory for host copies;
// device-to-device counts bytes read plus written).
double measure_copy_gbs(int dev, CopyKind kind, bool pinned, size_t bytes, int reps);
// Both directions at once (pinned host memory, one stream each, started together): the median
// GB/s of each direction while the other runs, as the streaming pipeline's weight copies in and
// activation copies out do.
struct DuplexRate {
  double h2d_gbs = 0, d2h_gbs = 0;
};
DuplexRate measure_duplex_gbs(int dev, size_t bytes, int reps);
// Median rate of an n x n x n bf16 GEMM with fp32 accumulation through cuBLAS, TFLOP/s.
double measure_bf16_gemm_tflops(int dev, int n, int reps);
}  // namespace onn::cuda
