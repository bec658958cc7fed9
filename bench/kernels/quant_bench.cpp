// Quantized weights: the CPU quantizer of the load path, dequantization (nf4, int8, fp8 to the
// compute dtype, reported as bytes/s of the quantized parts read plus the dense weight written)
// and the quantized linear as a block runs it (dequantize into a scratch, then the GEMM: reported as FLOP/s, to set beside
// matmul/cuda_bf16 at the same shape), at Llama-3-8B and Phi-4 projections with T tokens.
#include <random>

#include "bench_util.h"
#include "kernels/linear.h"
#include "kernels/quant.h"
#include "kernels/reference.h"

namespace onn::bench {

namespace {

// Phi-4: C=5120, H=40, KVH=10, D=128, F=17920, V=100352.
constexpr ModelShape kPhi4{"phi4", 5120, 40, 10, 128, 17920, 100352};

struct Weight {
  std::string name;
  int64_t out, in;
};

// A random (out, in) weight quantized on the CPU, its parts on ctx's device.
QuantTensor quantized_on(Context& ctx, const Weight& w, QuantFormat f) {
  std::mt19937 rng(7);
  const QuantTensor host = quantize(random_tensor(Shape{w.out, w.in}, rng), f, true, cpu_allocator());
  std::vector<Tensor> parts;
  for (const Tensor& p : host.parts()) parts.push_back(p.to(ctx.device()));
  size_t next = 0;
  return host.with_parts(parts, next);
}

OpSetup dequant(const Weight& w, QuantFormat f) {
  return [=](Context& ctx, DType t) {
    const QuantTensor q = quantized_on(ctx, w, f);
    Tensor out = Tensor::empty(Shape{w.out, w.in}, t, ctx.allocator());
    const double bytes = static_cast<double>(q.nbytes()) + static_cast<double>(out.nbytes());
    return OpRun{[=, &ctx]() mutable { dequantize(ctx, q, out); }, bytes};
  };
}

OpSetup quant_linear(const Weight& w, QuantFormat f, int64_t tokens) {
  return [=](Context& ctx, DType t) {
    const QuantTensor q = quantized_on(ctx, w, f);
    Tensor x = random_on(ctx, Shape{tokens, w.in}, t), y = Tensor::empty(Shape{tokens, w.out}, t, ctx.allocator());
    Tensor dense = Tensor::empty(Shape{w.out, w.in}, t, ctx.allocator());  // the block's scratch
    const double bytes = static_cast<double>(q.nbytes()) + static_cast<double>(x.nbytes() + y.nbytes());
    return OpRun{[=, &ctx]() mutable {
                   dequantize(ctx, q, dense);
                   linear_forward(ctx, x, dense, nullptr, y);
                 },
                 bytes, 2.0 * static_cast<double>(tokens) * static_cast<double>(w.out * w.in)};
  };
}

// The load path's quantizer (the CPU, one tensor at a time), reported as bytes/s of the fp32
// weight read.
void bm_quantize(benchmark::State& state, Weight w, QuantFormat f) {
  std::mt19937 rng(7);
  const Tensor dense = random_tensor(Shape{w.out, w.in}, rng);
  for (auto _ : state) {
    const QuantTensor q = quantize(dense, f, true, cpu_allocator());
    benchmark::DoNotOptimize(q.data.data());
  }
  state.counters["bytes/s"] = benchmark::Counter(static_cast<double>(dense.nbytes()),
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void register_quant(bool cuda) {
  std::vector<Weight> weights;
  for (const ModelShape& m : {kLlama3_8B, kPhi4}) {
    weights.push_back({std::string(m.name) + "_gate_up", 2 * m.f, m.c});
    weights.push_back({std::string(m.name) + "_down", m.c, m.f});
  }
  for (QuantFormat f : {QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8}) {
    const std::string fmt(quant_format_name(f));
    for (const Weight& w : weights) {
      register_op("dequantize_" + fmt, w.name, dequant(w, f), cuda, false, false);
      register_op("quant_linear_" + fmt, w.name + "_T4096", quant_linear(w, f, kBatchTokens), cuda, false, false);
      register_op("quant_linear_" + fmt, w.name + "_T1", quant_linear(w, f, 1), cuda, false, false);
    }
    // Small CPU shapes: the reference path, for regressions, not for peak figures.
    const Weight small{"tinyllama_down", kTinyLlama.c, kTinyLlama.f};
    register_op("dequantize_" + fmt, small.name, dequant(small, f), false, true);
    register_op("quant_linear_" + fmt, small.name + "_T128", quant_linear(small, f, 128), false, true);
    benchmark::RegisterBenchmark(("quantize_" + fmt + "/cpu_f32/" + small.name).c_str(), bm_quantize, small, f)
        ->UseRealTime()  // its threads' wall time
        ->Unit(benchmark::kMillisecond);
  }
}

const RegisterOp kRegister(register_quant);

}  // namespace

}  // namespace onn::bench
