// Check macros for CUDA runtime and cuBLAS(Lt) calls. Include only from code compiled in
// CUDA builds (it needs the CUDA headers). Each records statement, file, line and device,
// and throws CudaError / BlasError (OutOfMemory for cudaErrorMemoryAllocation).
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "runtime/error.h"

namespace onn::detail {
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* stmt, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* stmt, const char* file, int line);
}  // namespace onn::detail

#define ONN_CUDA_CHECK(stmt)                                                      \
  do {                                                                            \
    const cudaError_t onn_err_ = (stmt);                                          \
    if (onn_err_ != cudaSuccess)                                                  \
      ::onn::detail::throw_cuda_error(onn_err_, #stmt, __FILE__, __LINE__);       \
  } while (0)

#define ONN_CUBLAS_CHECK(stmt)                                                    \
  do {                                                                            \
    const cublasStatus_t onn_st_ = (stmt);                                        \
    if (onn_st_ != CUBLAS_STATUS_SUCCESS)                                         \
      ::onn::detail::throw_cublas_error(onn_st_, #stmt, __FILE__, __LINE__);      \
  } while (0)

// After every kernel launch.
#define ONN_CUDA_CHECK_LAUNCH() ONN_CUDA_CHECK(cudaGetLastError())
