// CPU-only build: no CUDA device ever exists; every device operation is a clear error.
#include "runtime/cuda_backend.h"
#include "runtime/error.h"

namespace onn::cuda {

namespace detail_none {
[[noreturn]] void no_cuda() { throw InvalidArgument("this build of ONN has no CUDA backend (built with ONN_CUDA=OFF or without nvcc)"); }
}  // namespace detail_none
using detail_none::no_cuda;

bool compiled_in() { return false; }
int device_count() { return 0; }
int current_device_or_minus_one() { return -1; }
void set_device(int) { no_cuda(); }
DeviceProps properties(int) { no_cuda(); }
void mem_info(int, size_t*, size_t*) { no_cuda(); }
std::string driver_version_string() { return "none"; }
std::string runtime_version_string() { return "none"; }
std::string pci_bus_id(int) { return ""; }
void* device_malloc(int, size_t) { no_cuda(); }
void device_free(int, void*) { no_cuda(); }
void* host_malloc_pinned(size_t) { no_cuda(); }
void host_free_pinned(void*) { no_cuda(); }
void memcpy_async(void*, const void*, size_t, CopyKind, CUstream_st*) { no_cuda(); }
void memset_async(void*, int, size_t, CUstream_st*) { no_cuda(); }
CUstream_st* stream_create(int) { no_cuda(); }
void stream_destroy(CUstream_st*) { no_cuda(); }
void stream_synchronize(CUstream_st*) { no_cuda(); }
void stream_wait_event(CUstream_st*, CUevent_st*) { no_cuda(); }
CUevent_st* event_create(int, bool) { no_cuda(); }
void event_destroy(CUevent_st*) { no_cuda(); }
void event_record(CUevent_st*, CUstream_st*) { no_cuda(); }
void event_synchronize(CUevent_st*) { no_cuda(); }
bool event_query(CUevent_st*) { no_cuda(); }
float event_elapsed_ms(CUevent_st*, CUevent_st*) { no_cuda(); }
void device_synchronize(int) { no_cuda(); }

}  // namespace onn::cuda

namespace onn::cuda {
using detail_none::no_cuda;
cublasContext* cublas_create(int, CUstream_st*) { no_cuda(); }
void cublas_destroy(cublasContext*) { no_cuda(); }
cublasLtContext* cublaslt_create() { no_cuda(); }
void cublaslt_destroy(cublasLtContext*) { no_cuda(); }
}  // namespace onn::cuda

namespace onn::cuda {
double measure_copy_gbs(int, CopyKind, bool, size_t, int) { detail_none::no_cuda(); }
DuplexRate measure_duplex_gbs(int, size_t, int) { detail_none::no_cuda(); }
double measure_bf16_gemm_tflops(int, int, int) { detail_none::no_cuda(); }
}  // namespace onn::cuda
