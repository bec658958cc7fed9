// GEMM: OpenBLAS on the CPU, cuBLASLt on CUDA (bf16 and f32), at square sizes and at the
// projections of real models (y = x W^T with T tokens). Reports FLOP/s and, on CUDA, the
// percentage of the profiled bf16 GEMM peak.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kernels/matmul.h"
#include "kernels/reference.h"
#include "runtime/cuda_backend.h"
#include "runtime/stream.h"

namespace onn::bench {

namespace {

struct GemmShape {
  std::string name;
  int64_t m, n, k;  // c (m, n) = a (m, k) @ b^T, b stored (n, k)
};

// T tokens through a weight (out, in). Llama-3-8B: C=4096, H=32, KVH=8, D=128, F=14336,
// V=128256. TinyLlama-1.1B: C=2048, KVH=4, D=64, F=5632.
const std::vector<GemmShape>& cuda_shapes() {
  static const std::vector<GemmShape> s = {
      {"square_4096", 4096, 4096, 4096},
      {"square_8192", 8192, 8192, 8192},
      {"llama3_8b_qkv_T4096", 4096, 4096 + 2 * 1024, 4096},
      {"llama3_8b_o_T4096", 4096, 4096, 4096},
      {"llama3_8b_gate_up_T4096", 4096, 2 * 14336, 4096},
      {"llama3_8b_down_T4096", 4096, 4096, 14336},
      {"llama3_8b_lm_head_T4096", 4096, 128256, 4096},
      {"tinyllama_gate_up_T4096", 4096, 2 * 5632, 2048},
      {"tinyllama_down_T4096", 4096, 2048, 5632},
      {"llama3_8b_decode_qkv_T1", 1, 4096 + 2 * 1024, 4096},
  };
  return s;
}

const std::vector<GemmShape>& cpu_shapes() {
  static const std::vector<GemmShape> s = {
      {"square_256", 256, 256, 256},
      {"square_1024", 1024, 1024, 1024},
      {"tinyllama_gate_up_T128", 128, 2 * 5632, 2048},
      {"tinyllama_down_T128", 128, 2048, 5632},
      {"smollm_up_T256", 256, 1536, 576},
      {"smollm_down_T256", 256, 576, 1536},
  };
  return s;
}

double flops(const GemmShape& g) { return 2.0 * static_cast<double>(g.m) * g.n * g.k; }

void bm_cpu(benchmark::State& state, GemmShape g) {
  Context ctx(Device::cpu());
  std::mt19937 rng(1);
  const Tensor a = random_tensor(Shape{g.m, g.k}, rng), b = random_tensor(Shape{g.n, g.k}, rng);
  Tensor c = Tensor::empty(Shape{g.m, g.n}, DType::f32);
  MatmulOptions o;
  o.trans_b = true;
  for (auto _ : state) {
    matmul(ctx, a, b, c, o);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(flops(g), benchmark::Counter::kIsIterationInvariantRate);
}

void bm_cuda(benchmark::State& state, GemmShape g, DType dtype) {
  Context ctx(Device::cuda(0));
  std::mt19937 rng(2);
  const cuda::DeviceProps props = cuda::properties(0);
  // Enough input sets that consecutive runs do not find their operands in L2.
  const double set_bytes = static_cast<double>(g.m * g.k + g.n * g.k) * dtype_size(dtype);
  const int sets = std::clamp(static_cast<int>(2.0 * props.l2_bytes / set_bytes) + 1, 1, 8);
  std::vector<Tensor> as, bs;
  for (int i = 0; i < sets; ++i) {
    as.push_back(random_tensor(Shape{g.m, g.k}, rng).to_dtype(dtype).to(ctx.device()));
    bs.push_back(random_tensor(Shape{g.n, g.k}, rng).to_dtype(dtype).to(ctx.device()));
  }
  Tensor c = Tensor::empty(Shape{g.m, g.n}, dtype, ctx.device());
  MatmulOptions o;
  o.trans_b = true;
  for (int i = 0; i < 3; ++i) matmul(ctx, as[0], bs[0], c, o);  // warm-up: heuristics, clocks
  ctx.synchronize();
  Event start(ctx.device()), stop(ctx.device());
  double total_s = 0;
  int i = 0;
  for (auto _ : state) {
    start.record(ctx.compute());
    matmul(ctx, as[static_cast<size_t>(i % sets)], bs[static_cast<size_t>(i % sets)], c, o);
    stop.record(ctx.compute());
    stop.synchronize();
    const double s = Event::elapsed_ms(start, stop) * 1e-3;
    state.SetIterationTime(s);
    total_s += s;
    ++i;
  }
  const double rate = flops(g) * static_cast<double>(state.iterations()) / total_s;
  state.counters["FLOP/s"] = benchmark::Counter(flops(g), benchmark::Counter::kIsIterationInvariantRate);
  const double peak = profiled_bf16_tflops();
  if (peak > 0) state.counters["pct_of_bf16_peak"] = 100.0 * rate / (peak * 1e12);
  state.counters["input_sets"] = sets;
}

void register_matmul(bool has_cuda) {
  for (const auto& g : cpu_shapes()) {
    benchmark::RegisterBenchmark(("matmul/cpu_f32/" + g.name).c_str(), bm_cpu, g)->Unit(benchmark::kMillisecond);
  }
  if (!has_cuda) return;
  for (DType t : {DType::bf16, DType::f32}) {
    for (const auto& g : cuda_shapes()) {
      const std::string name = "matmul/cuda_" + std::string(t == DType::bf16 ? "bf16" : "f32") + "/" + g.name;
      benchmark::RegisterBenchmark(name.c_str(), bm_cuda, g, t)->UseManualTime()->Unit(benchmark::kMicrosecond);
    }
  }
}

const RegisterOp kRegister(register_matmul);

}  // namespace

}  // namespace onn::bench
