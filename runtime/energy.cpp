// NVML through dlopen: nvmlInit_v2, nvmlDeviceGetHandleByPciBusId_v2 (the CUDA device's PCI
// bus id, since NVML and CUDA may number devices differently) and
// nvmlDeviceGetTotalEnergyConsumption (millijoules since the driver loaded).
#include "runtime/energy.h"

#include <dlfcn.h>

#include "runtime/cuda_backend.h"

namespace onn {

namespace {
using NvmlInit = int (*)();
using NvmlShutdown = int (*)();
using NvmlByBusId = int (*)(const char*, void**);
using NvmlEnergy = int (*)(void*, unsigned long long*);
}  // namespace

EnergyMeter::EnergyMeter(Device device) {
  if (!device.is_cuda()) {
    reason_ = "the CPU backend has no energy counter";
    return;
  }
  const std::string bus = cuda::pci_bus_id(device.index);
  if (bus.empty()) {
    reason_ = "the CUDA device's PCI bus id is unknown";
    return;
  }
  lib_ = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib_) {
    reason_ = "NVML (libnvidia-ml.so.1) is not installed";
    return;
  }
  const auto init = reinterpret_cast<NvmlInit>(::dlsym(lib_, "nvmlInit_v2"));
  const auto by_bus = reinterpret_cast<NvmlByBusId>(::dlsym(lib_, "nvmlDeviceGetHandleByPciBusId_v2"));
  read_ = ::dlsym(lib_, "nvmlDeviceGetTotalEnergyConsumption");
  void* handle = nullptr;
  if (!init || !by_bus || !read_ || init() != 0) {
    reason_ = "NVML could not be initialised";
  } else if (by_bus(bus.c_str(), &handle) != 0 || !handle) {
    reason_ = "NVML does not know the device at " + bus;
  } else if (reinterpret_cast<NvmlEnergy>(read_)(handle, &start_mj_) != 0) {
    reason_ = "the device does not report its energy use";
  } else {
    device_ = handle;
    return;
  }
  ::dlclose(lib_);
  lib_ = nullptr;
}

EnergyMeter::~EnergyMeter() {
  if (!lib_) return;
  if (const auto shutdown = reinterpret_cast<NvmlShutdown>(::dlsym(lib_, "nvmlShutdown"))) shutdown();
  ::dlclose(lib_);
}

double EnergyMeter::joules() const {
  if (!device_) return 0.0;
  unsigned long long mj = 0;
  if (reinterpret_cast<NvmlEnergy>(read_)(device_, &mj) != 0 || mj < start_mj_) return 0.0;
  return static_cast<double>(mj - start_mj_) / 1000.0;
}

}  // namespace onn
