// Energy a GPU has used, from NVML's total-energy counter (Volta and later). NVML is loaded
// at run time (libnvidia-ml.so.1, installed with the driver), so ONN's binaries start on
// machines without it; the CPU backend, a GPU without the counter or a missing NVML make the
// meter unavailable, and reason() says which.
#pragma once

#include <string>

#include "runtime/device.h"

namespace onn {

class EnergyMeter {
 public:
  explicit EnergyMeter(Device device);
  ~EnergyMeter();
  EnergyMeter(const EnergyMeter&) = delete;
  EnergyMeter& operator=(const EnergyMeter&) = delete;

  bool available() const { return device_ != nullptr; }
  const std::string& reason() const { return reason_; }
  // Joules since construction (0 when unavailable). The counter is in millijoules and
  // updated by the driver every few milliseconds, so short intervals are coarse.
  double joules() const;

 private:
  void* lib_ = nullptr;     // dlopen handle
  void* device_ = nullptr;  // nvmlDevice_t
  void* read_ = nullptr;    // nvmlDeviceGetTotalEnergyConsumption
  unsigned long long start_mj_ = 0;
  std::string reason_;
};

}  // namespace onn
