// onn_kernels_bench: one Google Benchmark binary for every op. CUDA benchmarks are
// registered only where a device exists (and the binary says when there is none).
#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "runtime/cuda_backend.h"
#include "runtime/device.h"
#include "runtime/hardware.h"

namespace onn::bench {

namespace {
std::vector<Registrar>& registrars() {
  static std::vector<Registrar> r;
  return r;
}
}  // namespace

RegisterOp::RegisterOp(Registrar r) { registrars().push_back(r); }

double profiled_bf16_tflops() {
  // The GEMM measurement of the hardware profile, without its copy measurements.
  static const double peak = [] {
    const ProfileOptions o;
    return cuda_device_count() > 0 ? cuda::measure_bf16_gemm_tflops(0, o.gemm_n, o.reps) : 0.0;
  }();
  return peak;
}

}  // namespace onn::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const bool has_cuda = onn::cuda_device_count() > 0;
  if (!has_cuda) std::fprintf(stderr, "CUDA benchmarks skipped: no CUDA device\n");
  for (auto r : onn::bench::registrars()) r(has_cuda);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
