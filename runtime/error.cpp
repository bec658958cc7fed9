// Formatting of check failures shared by ONN_ASSERT, ONN_CUDA_CHECK and ONN_CUBLAS_CHECK.
#include "runtime/error.h"

#include "runtime/cuda_backend.h"

namespace onn::detail {

std::string format_check_failure(const char* kind, const char* stmt, const char* file, int line,
                                 const std::string& detail) {
  std::ostringstream os;
  os << kind << " `" << stmt << "` failed at " << file << ":" << line << " (device ";
  const int dev = cuda::current_device_or_minus_one();
  if (dev >= 0) {
    os << "cuda:" << dev;
  } else {
    os << "cpu";
  }
  os << ")";
  if (!detail.empty()) os << ": " << detail;
  return os.str();
}

}  // namespace onn::detail
