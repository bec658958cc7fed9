// Where a tensor lives: the host CPU or CUDA device N. Parsed from and printed as
// "cpu" / "cuda:N".
#pragma once

#include <string>
#include <string_view>

namespace onn {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;  // meaningful for cuda only

  static constexpr Device cpu() { return Device{DeviceType::cpu, 0}; }
  static constexpr Device cuda(int i = 0) { return Device{DeviceType::cuda, i}; }

  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  std::string str() const;
  // "cpu", "cuda", "cuda:N"; throws InvalidArgument on anything else.
  static Device parse(std::string_view s);

  friend bool operator==(const Device&, const Device&) = default;
};

// Number of usable CUDA devices: 0 in a CPU-only build, without a driver, or without a GPU.
int cuda_device_count();
bool cuda_available();
// cuda:0 when a CUDA device exists, else cpu.
Device default_device();

}  // namespace onn
