// Resident or streamed models for onn-generate and onn-eval (tools/inference_model.h).
#include "tools/inference_model.h"

#include "model/config.h"
#include "runtime/allocator.h"
#include "runtime/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/hardware.h"

namespace onn::tools {

void InferenceFlags::add_to(CLI::App& app, const std::string& what) {
  app.add_option("--stream", stream, "keep the weights in host memory and stream them to the device a chunk of "
                                     "layers at a time: auto (when they do not fit the budget, on CUDA), on, off "
                                     "(default auto)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_option("--layers-per-chunk", layers_per_chunk, "layers per streamed chunk (default: the plan's)")
      ->check(CLI::PositiveNumber);
  app.add_option("--vram-budget", vram_budget, "device memory " + what + " may use, e.g. 4GiB (default: the free "
                                               "memory less a margin)")
      ->transform(CLI::AsSizeValue(false));
  app.add_flag("--plan", plan, "print whether the model runs resident or streamed, the predicted device memory and "
                               "(streamed) the PCIe time per decoded token, from config.json alone, and exit");
  app.add_option("--host-ram", host_ram, "with --plan: host memory the plan may use, e.g. 64GiB (default: what this "
                                         "machine has available)")
      ->transform(CLI::AsSizeValue(false));
}

namespace {
GenerationPlan plan_on(Device device, const std::string& model_dir, const InferenceFlags& f, int64_t batch,
                       int64_t max_len, int64_t prefill_tokens) {
  const ModelConfig cfg = load_model_config(model_dir);
  const PlanHardware hw = plan_hardware_for(device, f.vram_budget, f.host_ram);
  return plan_generation(cfg, default_compute_dtype(device), f.vram_budget, batch,
                         std::min<int64_t>(max_len, cfg.max_position_embeddings), prefill_tokens, hw);
}
}  // namespace

GenerationPlan inference_plan(const std::string& device_flag, const std::string& model_dir, const InferenceFlags& f,
                              int64_t batch, int64_t max_len, int64_t prefill_tokens) {
  const Device device = device_flag.empty() ? default_device() : Device::parse(device_flag);
  return plan_on(device, model_dir, f, batch, max_len, prefill_tokens);
}

InferenceModel load_inference_model(Context& ctx, const std::string& model_dir, const InferenceFlags& f, int64_t batch,
                                    int64_t max_len, int64_t prefill_tokens) {
  InferenceModel m;
  auto* caching = dynamic_cast<CachingAllocator*>(&ctx.allocator());
  if (f.vram_budget > 0) {
    if (!caching) throw InvalidArgument("--vram-budget applies to a CUDA device; this run is on " + ctx.device().str());
    caching->set_budget(f.vram_budget);
  }
  bool streamed = f.stream == "on";
  int64_t k = f.layers_per_chunk;
  if (f.stream == "auto" && ctx.device().is_cuda()) {
    m.plan = plan_on(ctx.device(), model_dir, f, batch, max_len, prefill_tokens);
    streamed = m.plan->streamed;
    if (k == 0 && streamed) k = m.plan->layers_per_chunk;
  }
  if (!streamed) {
    m.model = std::make_unique<LlamaModel>(LlamaModel::load(ctx, model_dir));
    return m;
  }
  m.model = std::make_unique<LlamaModel>(LlamaModel::load_to_host(ctx, model_dir));
  StreamOptions so;
  so.layers_per_chunk = std::min<int64_t>(std::max<int64_t>(k, 1), m.model->config().num_hidden_layers);
  m.stream = std::make_unique<StreamedWeights>(ctx, *m.model, so);
  return m;
}

}  // namespace onn::tools
