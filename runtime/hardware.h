// The hardware profile: what this machine has and how fast it moves and multiplies, as
// measured (not read off a datasheet). The planner (a later issue) decides from these.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace onn {

struct CudaDeviceProfile {
  int index = 0;
  std::string name;
  int sm_count = 0;
  int cc_major = 0;
  int cc_minor = 0;
  size_t vram_total = 0;
  size_t vram_free = 0;
  size_t l2_bytes = 0;
  // Measured, GB/s (1e9 bytes/s). Device copy counts bytes read plus bytes written.
  double h2d_pinned_gbs = 0;
  double d2h_pinned_gbs = 0;
  double h2d_pageable_gbs = 0;
  double d2h_pageable_gbs = 0;
  double d2d_copy_gbs = 0;
  // Measured dense bf16 GEMM (fp32 accumulate) rate, TFLOP/s.
  double bf16_gemm_tflops = 0;
  bool measured = false;
};

struct HardwareProfile {
  std::string cpu_model;
  int cpu_threads = 0;
  size_t ram_total = 0;
  size_t ram_available = 0;
  double host_memcpy_gbs = 0;  // measured; bytes read plus bytes written
  bool cuda_compiled = false;
  std::string cuda_runtime;
  std::string cuda_driver;
  std::vector<CudaDeviceProfile> devices;
};

struct ProfileOptions {
  bool measure = true;                        // false: static facts only (fast)
  size_t transfer_bytes = size_t{256} << 20;  // per copy measurement
  int gemm_n = 8192;                          // square bf16 GEMM size
  int reps = 10;
};

HardwareProfile profile_hardware(const ProfileOptions& opts = {});
nlohmann::json to_json(const HardwareProfile& p);
std::string to_text(const HardwareProfile& p);

}  // namespace onn
