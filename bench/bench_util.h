// Shared benchmark plumbing: device timing with CUDA events, the profiled peaks results are
// compared with (bf16 GEMM rate, device copy bandwidth), L2 flushing between timed runs, and
// registration of one op's benchmarks on every backend and dtype.
#pragma once

#include <benchmark/benchmark.h>

#include <functional>
#include <string>
#include <vector>

#include "runtime/context.h"

namespace onn::bench {

// The measured bf16 GEMM rate of cuda:0, as the hardware profile measures it, TFLOP/s
// (once per process, on first use).
double profiled_bf16_tflops();
// The measured device-to-device copy rate of cuda:0 (bytes read plus written), GB/s.
double profiled_copy_gbs();
// The host memory read rate with every CPU pool thread reading its share of a 512 MiB buffer
// (best of 5 passes), GB/s: the CPU decode roofline's bandwidth.
double measured_host_read_gbs();
// Registers every benchmark of one op; called from main. has_cuda: a device exists.
using Registrar = void (*)(bool has_cuda);
struct RegisterOp {
  explicit RegisterOp(Registrar r);
};

// One execution of an op: `run` enqueues it on ctx's compute stream; `bytes` is the memory
// traffic it needs (reads plus writes, each tensor once), `flops` its arithmetic.
struct OpRun {
  std::function<void()> run;
  double bytes = 0;
  double flops = 0;
};
using OpSetup = std::function<OpRun(Context& ctx, DType dtype)>;

// Registers "<op>/cpu_f32/<shape>" (when cpu_shape) and, with a device, "<op>/cuda_bf16/<shape>"
// and "<op>/cuda_f32/<shape>". CUDA runs are timed with events around the op alone, after an
// L2 flush, and report GB/s or TFLOP/s with the percentage of the matching profiled peak.
void register_op(const std::string& op, const std::string& shape, const OpSetup& setup, bool has_cuda,
                 bool cpu_shape, bool cuda_f32 = true);

// A tensor of `dtype` on ctx's device holding uniform values in [-scale, scale] (a random
// block of up to 1M values, tiled: fast for GiB-sized inputs).
Tensor random_on(Context& ctx, const Shape& shape, DType dtype, double scale = 1.0, uint32_t seed = 1);
// An I32 tensor on ctx's device with values in [0, bound).
Tensor random_ids(Context& ctx, int64_t n, int64_t bound, uint32_t seed = 2);

// Model shapes: Llama-3-8B and TinyLlama-1.1B, and the 4k-token batch.
struct ModelShape {
  const char* name;
  int64_t c, h, kvh, d, f, v;
};
inline constexpr ModelShape kLlama3_8B{"llama3_8b", 4096, 32, 8, 128, 14336, 128256};
inline constexpr ModelShape kTinyLlama{"tinyllama", 2048, 32, 4, 64, 5632, 32000};
inline constexpr int64_t kBatchTokens = 4096;

}  // namespace onn::bench
