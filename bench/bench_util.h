// Shared benchmark plumbing: device timing with CUDA events, the profiled peak the
// results are compared with, and input rotation so repeated runs do not measure the L2.
#pragma once

#include <benchmark/benchmark.h>

#include <string>

namespace onn::bench {

// The measured bf16 GEMM rate of cuda:0, as the hardware profile measures it, TFLOP/s
// (once per process, on first use).
double profiled_bf16_tflops();
// Registers every benchmark of one op; called from main. has_cuda: a device exists.
using Registrar = void (*)(bool has_cuda);
struct RegisterOp {
  explicit RegisterOp(Registrar r);
};

}  // namespace onn::bench
