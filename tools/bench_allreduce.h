// onn-bench allreduce: the gradient all-reduce's time and bandwidth for a buffer of a given
// size, on the ranks a launcher started (mpirun -np N onn-bench allreduce ...).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "runtime/dist/dist.h"

namespace onn::tools {

struct AllreduceArgs {
  std::string device_flag;
  int64_t mib = 256;  // F32 gradient bytes per all-reduce
  int iters = 10;
  bool json = false;
  onn::dist::DistOptions dist;
};
void add_allreduce_flags(CLI::App* app, AllreduceArgs& a);
int run_allreduce_bench(const AllreduceArgs& a);

}  // namespace onn::tools
