// Hardware profile: CPU facts from the OS, CUDA device facts and measurements through the
// CUDA backend.
#include "runtime/hardware.h"

#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/cuda_backend.h"

namespace onn {

namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(' '));
        return v;
      }
    }
  }
  return "unknown";
}

size_t meminfo_kib(const char* key) {
  std::ifstream in("/proc/meminfo");
  std::string k;
  size_t v = 0;
  std::string unit;
  while (in >> k >> v >> unit) {
    if (k == key) return v;
  }
  return 0;
}

// Median of a few timed host memcpy runs over 64 MiB, bytes read plus written.
double measure_host_memcpy_gbs(int reps) {
  const size_t n = size_t{64} << 20;
  std::vector<char> a(n, 1), b(n, 2);
  std::vector<double> t;
  for (int r = 0; r < std::max(reps, 1) + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), n);
    const auto t1 = std::chrono::steady_clock::now();
    if (r > 0) t.push_back(std::chrono::duration<double>(t1 - t0).count());
    a[static_cast<size_t>(r) % n] = static_cast<char>(b[static_cast<size_t>(r) % n] + 1);
  }
  std::sort(t.begin(), t.end());
  return 2.0 * static_cast<double>(n) / t[t.size() / 2] / 1e9;
}

}  // namespace

HardwareProfile profile_hardware(const ProfileOptions& opts) {
  HardwareProfile p;
  p.cpu_model = cpu_model_name();
  p.cpu_threads = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  p.ram_total = meminfo_kib("MemTotal:") * 1024;
  p.ram_available = meminfo_kib("MemAvailable:") * 1024;
  if (opts.measure) p.host_memcpy_gbs = measure_host_memcpy_gbs(opts.reps);
  p.cuda_compiled = cuda::compiled_in();
  p.cuda_runtime = cuda::runtime_version_string();
  p.cuda_driver = cuda::driver_version_string();
  const int n = cuda::device_count();
  for (int d = 0; d < n; ++d) {
    const cuda::DeviceProps props = cuda::properties(d);
    CudaDeviceProfile dp;
    dp.index = d;
    dp.name = props.name;
    dp.sm_count = props.sm_count;
    dp.cc_major = props.cc_major;
    dp.cc_minor = props.cc_minor;
    dp.l2_bytes = props.l2_bytes;
    cuda::mem_info(d, &dp.vram_free, &dp.vram_total);
    if (opts.measure) {
      const size_t b = opts.transfer_bytes;
      using K = cuda::CopyKind;
      dp.h2d_pinned_gbs = cuda::measure_copy_gbs(d, K::host_to_device, true, b, opts.reps);
      dp.d2h_pinned_gbs = cuda::measure_copy_gbs(d, K::device_to_host, true, b, opts.reps);
      dp.h2d_pageable_gbs = cuda::measure_copy_gbs(d, K::host_to_device, false, b, opts.reps);
      dp.d2h_pageable_gbs = cuda::measure_copy_gbs(d, K::device_to_host, false, b, opts.reps);
      dp.d2d_copy_gbs = cuda::measure_copy_gbs(d, K::device_to_device, false, b, opts.reps);
      dp.bf16_gemm_tflops = cuda::measure_bf16_gemm_tflops(d, opts.gemm_n, opts.reps);
      dp.measured = true;
    }
    p.devices.push_back(dp);
  }
  return p;
}

nlohmann::json to_json(const HardwareProfile& p) {
  nlohmann::json j;
  j["cpu"] = {{"model", p.cpu_model},
              {"threads", p.cpu_threads},
              {"ram_total_bytes", p.ram_total},
              {"ram_available_bytes", p.ram_available},
              {"memcpy_gbs", p.host_memcpy_gbs}};
  j["cuda"] = {{"compiled", p.cuda_compiled}, {"runtime", p.cuda_runtime}, {"driver", p.cuda_driver},
               {"device_count", p.devices.size()}};
  nlohmann::json devs = nlohmann::json::array();
  for (const auto& d : p.devices) {
    nlohmann::json x = {{"index", d.index},
                        {"name", d.name},
                        {"sm_count", d.sm_count},
                        {"compute_capability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)},
                        {"vram_total_bytes", d.vram_total},
                        {"vram_free_bytes", d.vram_free},
                        {"l2_bytes", d.l2_bytes},
                        {"measured", d.measured}};
    if (d.measured) {
      x["h2d_pinned_gbs"] = d.h2d_pinned_gbs;
      x["d2h_pinned_gbs"] = d.d2h_pinned_gbs;
      x["h2d_pageable_gbs"] = d.h2d_pageable_gbs;
      x["d2h_pageable_gbs"] = d.d2h_pageable_gbs;
      x["d2d_copy_gbs"] = d.d2d_copy_gbs;
      x["bf16_gemm_tflops"] = d.bf16_gemm_tflops;
    }
    devs.push_back(std::move(x));
  }
  j["cuda"]["devices"] = std::move(devs);
  return j;
}

std::string to_text(const HardwareProfile& p) {
  std::ostringstream os;
  char buf[256];
  os << "CPU: " << p.cpu_model << ", " << p.cpu_threads << " threads\n";
  os << "RAM: " << format_bytes(p.ram_total) << " total, " << format_bytes(p.ram_available) << " available\n";
  if (p.host_memcpy_gbs > 0) {
    std::snprintf(buf, sizeof buf, "host memcpy: %.1f GB/s (read + write, measured)\n", p.host_memcpy_gbs);
    os << buf;
  }
  if (!p.cuda_compiled) {
    os << "CUDA: not compiled in (CPU-only build); running on the CPU\n";
  } else if (p.devices.empty()) {
    os << "CUDA: runtime " << p.cuda_runtime << ", driver " << p.cuda_driver
       << "; no CUDA device found, running on the CPU\n";
  } else {
    os << "CUDA: runtime " << p.cuda_runtime << ", driver " << p.cuda_driver << ", " << p.devices.size()
       << " device(s)\n";
  }
  for (const auto& d : p.devices) {
    os << "cuda:" << d.index << ": " << d.name << ", sm_" << d.cc_major << d.cc_minor << ", " << d.sm_count
       << " SMs, VRAM " << format_bytes(d.vram_total) << " total / " << format_bytes(d.vram_free) << " free, L2 "
       << format_bytes(d.l2_bytes) << "\n";
    if (d.measured) {
      std::snprintf(buf, sizeof buf,
                    "  host->device %.1f GB/s pinned, %.1f GB/s pageable; device->host %.1f GB/s pinned, "
                    "%.1f GB/s pageable\n  device copy %.0f GB/s (read + write); bf16 GEMM %.1f TFLOP/s\n",
                    d.h2d_pinned_gbs, d.h2d_pageable_gbs, d.d2h_pinned_gbs, d.d2h_pageable_gbs, d.d2d_copy_gbs,
                    d.bf16_gemm_tflops);
      os << buf;
    }
  }
  return os.str();
}

}  // namespace onn
