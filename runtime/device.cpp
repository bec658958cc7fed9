// Device naming and CUDA device discovery.
#include "runtime/device.h"

#include <charconv>

#include "runtime/cuda_backend.h"
#include "runtime/error.h"

namespace onn {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device Device::parse(std::string_view s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.starts_with("cuda:")) {
    const std::string_view num = s.substr(5);
    int idx = -1;
    const auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), idx);
    if (ec == std::errc() && ptr == num.data() + num.size() && idx >= 0) return cuda(idx);
  }
  throw InvalidArgument("invalid device \"" + std::string(s) + "\" (expected cpu, cuda or cuda:N)");
}

int cuda_device_count() { return cuda::device_count(); }
bool cuda_available() { return cuda_device_count() > 0; }
Device default_device() { return cuda_available() ? Device::cuda(0) : Device::cpu(); }

}  // namespace onn
