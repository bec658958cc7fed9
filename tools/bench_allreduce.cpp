#include "tools/bench_allreduce.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <vector>

#include "runtime/context.h"
#include "runtime/json.h"
#include "tools/cli.h"

namespace onn::tools {

void add_allreduce_flags(CLI::App* app, AllreduceArgs& a) {
  app->add_option("--device", a.device_flag, "cpu or cuda (default: cuda when present; each rank takes the GPU of its "
                                             "local rank)");
  app->add_option("--mib", a.mib, "MiB of F32 gradients summed per all-reduce (default 256)")->check(CLI::Range(1, 1 << 16));
  app->add_option("--iters", a.iters, "timed all-reduces, after one untimed (default 10)")->check(CLI::Range(1, 1000));
  app->add_option("--comm-timeout", a.dist.timeout_s, "seconds a collective may wait (default 600)")->check(CLI::PositiveNumber);
  app->add_flag("--json", a.json, "one JSON object on stdout");
}

int run_allreduce_bench(const AllreduceArgs& a) {
  std::unique_ptr<Communicator> comm = dist::make_communicator(a.dist);
  set_cli_rank(comm->rank());
  const Device device =
      dist::rank_device(*comm, device_from_flag(a.device_flag), a.device_flag.find(':') != std::string::npos);
  comm = dist::with_nccl(std::move(comm), device, a.dist);
  Context ctx(device);
  const int64_t n = a.mib * (int64_t{1} << 20) / 4;
  Tensor grads = Tensor::zeros(Shape{n}, DType::f32, device);
  const std::vector<Tensor> tensors = {grads};
  std::vector<double> ms;
  for (int i = 0; i <= a.iters; ++i) {
    comm->barrier();
    ctx.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    comm->all_reduce_sum(ctx, tensors);
    ctx.synchronize();
    if (i > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2], bytes = static_cast<double>(n) * 4;
  const double algbw = bytes / (median * 1e6), world = comm->size();
  // A ring all-reduce moves 2 (N - 1) / N of the buffer through each rank's link.
  const double busbw = algbw * 2 * (world - 1) / std::max(1.0, world);
  if (!comm->lead()) return 0;
  const nlohmann::ordered_json j = {{"type", "allreduce"}, {"world_size", comm->size()},
                                    {"backend", comm_backend_name(comm->backend())}, {"device", device.str()},
                                    {"bytes", static_cast<int64_t>(bytes)}, {"median_ms", median},
                                    {"min_ms", ms.front()}, {"algbw_gbs", algbw}, {"busbw_gbs", busbw}};
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "onn-bench allreduce: " << comm->size() << " rank(s), " << comm_backend_name(comm->backend()) << " on "
              << device.str() << ", " << a.mib << " MiB F32: median " << median << " ms (min " << ms.front()
              << "), algorithm bandwidth " << algbw << " GB/s, bus bandwidth " << busbw << " GB/s\n";
  }
  return 0;
}

}  // namespace onn::tools
