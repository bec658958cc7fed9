// onn_kernels_bench: one Google Benchmark binary for every op. CUDA benchmarks are
// registered only where a device exists (and the binary says when there is none).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "bench_util.h"
#include "runtime/cuda_backend.h"
#include "runtime/device.h"
#include "runtime/hardware.h"
#include "runtime/parallel.h"
#include "runtime/stream.h"

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

double profiled_copy_gbs() {
  static const double peak = [] {
    const ProfileOptions o;
    return cuda_device_count() > 0
               ? cuda::measure_copy_gbs(0, cuda::CopyKind::device_to_device, false, o.transfer_bytes, o.reps)
               : 0.0;
  }();
  return peak;
}

double measured_host_read_gbs() {
  static const double rate = [] {
    constexpr int64_t kBytes = int64_t{512} << 20, kParts = 256, kPasses = 5;
    std::vector<float> buf(static_cast<size_t>(kBytes / sizeof(float)), 1.0f);
    std::vector<float> sums(kParts);
    const int64_t per = static_cast<int64_t>(buf.size()) / kParts;
    double best = 0;
    for (int pass = 0; pass < kPasses; ++pass) {
      const auto t0 = std::chrono::steady_clock::now();
      parallel_for(kParts, 1, [&](int64_t part, int64_t, int64_t) {
        float lanes[64] = {};
        const float* p = buf.data() + part * per;
        for (int64_t i = 0; i < per; i += 64)
          for (int l = 0; l < 64; ++l) lanes[l] += p[i + l];
        for (float x : lanes) sums[static_cast<size_t>(part)] += x;
      });
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, static_cast<double>(kBytes) / s / 1e9);
    }
    benchmark::DoNotOptimize(sums.data());
    return best;
  }();
  return rate;
}

Tensor random_on(Context& ctx, const Shape& shape, DType dtype, double scale, uint32_t seed) {
  const int64_t n = shape.numel(), block = std::min<int64_t>(n, int64_t{1} << 20);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-scale, scale);
  Tensor host = Tensor::empty(Shape{block}, dtype);
  for (int64_t i = 0; i < block; ++i) store_from_double(host.data(), dtype, static_cast<size_t>(i), u(rng));
  Tensor flat = Tensor::empty(Shape{n}, dtype, ctx.allocator());
  for (int64_t off = 0; off < n; off += block) {
    Tensor part = flat.slice(off, std::min(n, off + block));
    part.copy_from(host.slice(0, part.numel()));
  }
  return flat.reshape(shape);
}

Tensor random_ids(Context& ctx, int64_t n, int64_t bound, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor host = Tensor::empty(Shape{n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) host.data_as<int32_t>()[i] = static_cast<int32_t>(rng() % static_cast<uint64_t>(bound));
  return host.to(ctx.device());
}

namespace {

void time_cpu(benchmark::State& state, const OpSetup& setup) {
  Context ctx(Device::cpu());
  const OpRun op = setup(ctx, DType::f32);
  for (auto _ : state) op.run();
  if (op.bytes > 0) state.counters["bytes/s"] = benchmark::Counter(op.bytes, benchmark::Counter::kIsIterationInvariantRate);
  if (op.flops > 0) state.counters["FLOP/s"] = benchmark::Counter(op.flops, benchmark::Counter::kIsIterationInvariantRate);
}

void time_cuda(benchmark::State& state, const OpSetup& setup, DType dtype) {
  Context ctx(Device::cuda(0));
  const OpRun op = setup(ctx, dtype);
  // Writing twice the L2 between runs evicts the op's inputs: every run reads from DRAM.
  const cuda::DeviceProps props = cuda::properties(0);
  Tensor flush = Tensor::empty(Shape{static_cast<int64_t>(2 * props.l2_bytes + 1)}, DType::u8, ctx.allocator());
  for (int i = 0; i < 3; ++i) op.run();  // warm-up: clocks, cuBLASLt heuristics, allocator
  ctx.synchronize();
  Event start(ctx.device()), stop(ctx.device());
  double total_s = 0;
  for (auto _ : state) {
    flush.fill_bytes(0, &ctx.compute());
    start.record(ctx.compute());
    op.run();
    stop.record(ctx.compute());
    stop.synchronize();
    const double s = Event::elapsed_ms(start, stop) * 1e-3;
    state.SetIterationTime(s);
    total_s += s;
  }
  const double iters = static_cast<double>(state.iterations());
  if (op.bytes > 0) {
    state.counters["bytes/s"] = benchmark::Counter(op.bytes, benchmark::Counter::kIsIterationInvariantRate);
    const double peak = profiled_copy_gbs();
    if (peak > 0) state.counters["pct_of_copy_peak"] = 100.0 * op.bytes * iters / total_s / (peak * 1e9);
  }
  if (op.flops > 0) {
    state.counters["FLOP/s"] = benchmark::Counter(op.flops, benchmark::Counter::kIsIterationInvariantRate);
    const double peak = profiled_bf16_tflops();
    if (peak > 0) state.counters["pct_of_bf16_peak"] = 100.0 * op.flops * iters / total_s / (peak * 1e12);
  }
}

}  // namespace

void register_op(const std::string& op, const std::string& shape, const OpSetup& setup, bool has_cuda,
                 bool cpu_shape, bool cuda_f32) {
  if (cpu_shape)
    benchmark::RegisterBenchmark((op + "/cpu_f32/" + shape).c_str(), time_cpu, setup)->Unit(benchmark::kMillisecond);
  if (!has_cuda) return;
  benchmark::RegisterBenchmark((op + "/cuda_bf16/" + shape).c_str(), time_cuda, setup, DType::bf16)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  if (cuda_f32)
    benchmark::RegisterBenchmark((op + "/cuda_f32/" + shape).c_str(), time_cuda, setup, DType::f32)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
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
