// Generation: prefill tokens/s and batch-1 decode tokens/s of a randomly initialised model
// (onn-init presets with their real vocabularies: tiny, SmolLM-135M-like and TinyLlama-1.1B-like
// on the CPU, TinyLlama on CUDA), with the roofline beside decode: every token reads every
// weight once, so tokens/s cannot beat memory bandwidth / weight bytes (the device copy rate
// from the hardware profile on CUDA, the measured host read rate on the CPU).
#include <filesystem>
#include <unistd.h>

#include "bench_util.h"
#include "model/init.h"
#include "model/llama.h"
#include "runtime/stream.h"

namespace onn::bench {

namespace {

struct Loaded {
  std::unique_ptr<Context> ctx;
  std::unique_ptr<LlamaModel> model;
  double weight_bytes = 0;
};

// Removes the temporary model folders when the process ends.
struct TempFolders {
  std::vector<std::filesystem::path> dirs;
  ~TempFolders() {
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};

// One random model folder per preset per process, written to a temporary directory; loaded with
// its projections quantized to `quant` (none: bf16 / f32 as stored).
Loaded load(const std::string& preset, Device device, QuantFormat quant = QuantFormat::none) {
  static TempFolders folders;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("onn-bench-" + preset + "-" + std::to_string(::getpid()));
  if (!std::filesystem::exists(dir / "model.safetensors")) {
    folders.dirs.push_back(dir);
    InitOptions opt;
    opt.seed = 1;
    opt.dtype = DType::bf16;
    opt.vocab_size = find_preset(preset).config.vocab_size;
    write_random_model(find_preset(preset), dir.string(), opt);
  }
  Loaded l;
  l.ctx = std::make_unique<Context>(device);
  l.model = std::make_unique<LlamaModel>(LlamaModel::load(*l.ctx, dir.string(), std::nullopt, quant));
  const ModelWeights& w = l.model->weights();
  const auto bytes = [](const Tensor& t) { return t.defined() ? static_cast<double>(t.nbytes()) : 0.0; };
  l.weight_bytes = bytes(w.lm_head) + bytes(w.norm);  // the embedding is a lookup, not a full read
  for (const LayerWeights& L : w.layers)
    for (const Tensor& t : layer_parts(l.model->config(), L)) l.weight_bytes += bytes(t);  // quantized: the parts
  return l;
}

std::vector<int32_t> prompt_of(int64_t n, int64_t vocab) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919) % (vocab - 2));
  return p;
}

double elapsed(Context& ctx, const std::function<void()>& f) {
  Event a(ctx.device()), b(ctx.device());
  a.record(ctx.compute());
  f();
  b.record(ctx.compute());
  b.synchronize();
  return Event::elapsed_ms(a, b) * 1e-3;
}

void bm_prefill(benchmark::State& state, std::string preset, Device device, int64_t tokens) {
  Loaded l = load(preset, device);
  const std::vector<int32_t> prompt = prompt_of(tokens, l.model->config().vocab_size);
  double total = 0;
  for (auto _ : state) {
    KVCache cache = l.model->make_cache(*l.ctx, 1, tokens);
    const double s = elapsed(*l.ctx, [&] { l.model->prefill(*l.ctx, cache, {prompt}); });
    state.SetIterationTime(s);
    total += s;
  }
  state.counters["tok/s"] = static_cast<double>(tokens) * static_cast<double>(state.iterations()) / total;
}

void bm_decode(benchmark::State& state, std::string preset, Device device, int64_t context, QuantFormat quant) {
  Loaded l = load(preset, device, quant);
  const int64_t steps = state.max_iterations;
  KVCache cache = l.model->make_cache(*l.ctx, 1, context + steps + 1);
  const std::vector<int32_t> prompt = prompt_of(context, l.model->config().vocab_size);
  l.model->prefill(*l.ctx, cache, {prompt});
  l.ctx->synchronize();
  double total = 0;
  int32_t token = 5;
  for (auto _ : state) {
    const double s = elapsed(*l.ctx, [&] { l.model->decode(*l.ctx, cache, {token}); });
    state.SetIterationTime(s);
    total += s;
    token = (token * 31 + 7) % static_cast<int32_t>(l.model->config().vocab_size - 2);
  }
  const double tok_s = static_cast<double>(state.iterations()) / total;
  state.counters["tok/s"] = tok_s;
  state.counters["weight_MB"] = l.weight_bytes / 1e6;
  const double gbs = device.is_cuda() ? profiled_copy_gbs() : measured_host_read_gbs();
  if (gbs > 0) {
    const double roofline = gbs * 1e9 / l.weight_bytes;
    state.counters["roofline_tok/s"] = roofline;
    state.counters["pct_of_roofline"] = 100.0 * tok_s / roofline;
  }
}

void register_generate(bool cuda) {
  benchmark::RegisterBenchmark("generate_prefill/cpu_f32/tiny_T128", bm_prefill, "tiny", Device::cpu(), int64_t{128})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("generate_decode/cpu_f32/tiny_ctx128", bm_decode, "tiny", Device::cpu(), int64_t{128},
                               QuantFormat::none)
      ->UseManualTime()
      ->Iterations(64)
      ->Unit(benchmark::kMillisecond);
  // A quantized base: each token reads the quantized bytes, but the projections are dequantized
  // into a scratch before their GEMM (a fused dequantize-GEMV is not written), so decode stays
  // far from the quantized weights' roofline.
  for (QuantFormat q : {QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8}) {
    const std::string fmt(quant_format_name(q));
    benchmark::RegisterBenchmark(("generate_decode/cpu_f32/tiny_" + fmt + "_ctx128").c_str(), bm_decode, "tiny",
                                 Device::cpu(), int64_t{128}, q)
        ->UseManualTime()
        ->Iterations(64)
        ->Unit(benchmark::kMillisecond);
    if (cuda)
      benchmark::RegisterBenchmark(("generate_decode/cuda_bf16/tinyllama_" + fmt + "_ctx512").c_str(), bm_decode,
                                   "tinyllama", Device::cuda(0), int64_t{512}, q)
          ->UseManualTime()
          ->Iterations(128)
          ->Unit(benchmark::kMillisecond);
  }
  // Shape-faithful CPU figures: a 135M-class and a 1B-class model, f32, bf16 storage and quantized.
  for (const char* preset : {"smollm-135m", "tinyllama"})
    benchmark::RegisterBenchmark((std::string("generate_prefill/cpu_f32/") + preset + "_T128").c_str(), bm_prefill,
                                 preset, Device::cpu(), int64_t{128})
        ->UseManualTime()
        ->Iterations(3)
        ->Unit(benchmark::kMillisecond);
  for (const char* preset : {"smollm-135m", "tinyllama"})
    for (QuantFormat q : {QuantFormat::none, QuantFormat::bf16, QuantFormat::nf4, QuantFormat::int8}) {
      const std::string name = std::string("generate_decode/cpu_f32/") + preset +
                               (q == QuantFormat::none ? "" : "_" + std::string(quant_format_name(q))) + "_ctx128";
      benchmark::RegisterBenchmark(name.c_str(), bm_decode, preset, Device::cpu(), int64_t{128}, q)
          ->UseManualTime()
          ->Iterations(std::string(preset) == "tinyllama" ? 8 : 32)
          ->Unit(benchmark::kMillisecond);
    }
  if (!cuda) return;
  benchmark::RegisterBenchmark("generate_prefill/cuda_bf16/tinyllama_T512", bm_prefill, "tinyllama", Device::cuda(0),
                               int64_t{512})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("generate_decode/cuda_bf16/tinyllama_ctx512", bm_decode, "tinyllama", Device::cuda(0),
                               int64_t{512}, QuantFormat::none)
      ->UseManualTime()
      ->Iterations(128)
      ->Unit(benchmark::kMillisecond);
}

const RegisterOp kRegister(register_generate);

}  // namespace

}  // namespace onn::bench
