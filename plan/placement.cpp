// The placement step (plan/placement.h).
#include "plan/placement.h"

#include <algorithm>

#include "kernels/defaults.h"
#include "runtime/allocator.h"
#include "runtime/cuda_backend.h"
#include "runtime/error.h"

namespace onn {

uint64_t apply_budget(Context& ctx, uint64_t flag) {
  CachingAllocator* caching = ctx.caching_allocator();
  if (flag > 0) {
    if (!caching) throw InvalidArgument("--vram-budget applies to a CUDA device; this run is on " + ctx.device().str());
    caching->set_budget(flag);
  } else if (caching && ctx.device().is_cuda() && caching->budget() == 0) {
    // No flag: what the allocator holds plus the free memory less the margin (other processes,
    // the CUDA context).
    size_t free_bytes = 0, total = 0;
    cuda::mem_info(ctx.device().index, &free_bytes, &total);
    caching->set_budget(caching->stats().reserved + default_budget(free_bytes));
  }
  return caching ? caching->budget() : 0;
}

QuantFormat base_format(const ModelConfig& cfg, const PlacementFlags& f) {
  return cfg.stored_quant != QuantFormat::none ? cfg.stored_quant : f.quantize;
}

PlacedModel load_placed(Context& ctx, const std::string& dir, const PlacementChoice& choice) {
  PlacedModel m;
  if (!choice.streamed) {
    m.model = std::make_unique<LlamaModel>(LlamaModel::load(ctx, dir, std::nullopt, choice.quantize));
    return m;
  }
  m.model = std::make_unique<LlamaModel>(LlamaModel::load_to_host(ctx, dir, std::nullopt, choice.quantize));
  m.stream = std::make_unique<StreamedWeights>(ctx, *m.model, choice.stream);
  return m;
}

namespace {

// --layers-per-chunk, else the plan's, within [1, L].
int64_t chunk_layers(int64_t flag, int64_t planned, int64_t layers) {
  return std::min<int64_t>(std::max<int64_t>(flag > 0 ? flag : planned, 1), std::max<int64_t>(layers, 1));
}

}  // namespace

namespace {

GenerationPlan plan_for(const ModelConfig& cfg, Device device, const PlacementFlags& f, const GenerationShape& shape) {
  const PlanHardware hw = plan_hardware_for(device, f.vram_budget, f.host_ram);
  return plan_generation(cfg, default_compute_dtype(device), base_format(cfg, f), f.vram_budget, shape.batch,
                         std::min<int64_t>(shape.max_len, cfg.max_position_embeddings), shape.prefill_tokens, hw);
}

}  // namespace

GenerationPlan generation_plan(Device device, const std::string& dir, const PlacementFlags& f,
                               const GenerationShape& shape) {
  return plan_for(load_model_config(dir), device, f, shape);
}

void apply_cpu_matmul(const Context& ctx, CpuMatmul m) {
  ONN_CHECK_ARG(m == CpuMatmul::f32 || ctx.device().is_cpu(),
                "--cpu-matmul bf16 is for the CPU backend; on CUDA the products of bf16 weights are bf16 already");
  set_cpu_matmul(m);
}

PlacedModel place_for_generation(Context& ctx, const std::string& dir, const PlacementFlags& f,
                                 const GenerationShape& shape) {
  apply_cpu_matmul(ctx, f.cpu_matmul);
  const ModelConfig cfg = load_model_config(dir);
  PlacementFlags planned = f;
  planned.vram_budget = apply_budget(ctx, f.vram_budget);
  PlacementChoice choice;
  choice.quantize = f.quantize;
  choice.streamed = f.stream == Placement::streamed;
  int64_t k = 0;
  if (f.stream == Placement::auto_ && ctx.device().is_cuda()) {
    const GenerationPlan p = plan_for(cfg, ctx.device(), planned, shape);
    choice.streamed = p.streamed;
    k = p.layers_per_chunk;
  }
  if (choice.streamed) choice.stream.layers_per_chunk = chunk_layers(f.layers_per_chunk, k, cfg.num_hidden_layers);
  return load_placed(ctx, dir, choice);
}

std::optional<Plan> training_plan(const PlanRequest& req, const PlacementFlags& f, Device device, bool split_batch) {
  ONN_CHECK_ARG(!(req.full && f.stream == Placement::streamed), "--stream on trains LoRA adapters only: full "
                "training keeps its weights, their gradients and optimizer state on the device");
  if (!split_batch && (req.full || f.stream == Placement::resident || !device.is_cuda())) return std::nullopt;
  return plan_training(req, plan_hardware_for(device, req.budget));
}

PlacementChoice training_choice(const PlanRequest& req, const PlacementFlags& f, const std::optional<Plan>& plan,
                                int64_t grad_accum) {
  PlacementChoice c;
  c.quantize = f.quantize;
  const bool planned = plan && plan->streamed;
  c.streamed = f.stream == Placement::streamed || (f.stream == Placement::auto_ && planned);
  if (!c.streamed) return c;
  c.stream.layers_per_chunk = chunk_layers(f.layers_per_chunk, planned ? plan->layers_per_chunk : 0,
                                           req.model.num_hidden_layers);
  c.stream.offload_activations = planned && plan->activations_on_host;
  c.stream.activation_layers_on_device = c.stream.offload_activations ? plan->activation_layers_on_device : 0;
  if (f.share_loads == Sharing::on)
    c.micro_batches_per_load = grad_accum;
  else if (f.share_loads == Sharing::auto_ && planned && plan->grad_accum == grad_accum)
    c.micro_batches_per_load = plan->micro_batches_per_load;
  return c;
}

}  // namespace onn
