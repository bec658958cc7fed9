// The one placement step of every tool that runs a model (onn-train, onn-bench, onn-generate,
// onn-eval): the device budget (--vram-budget, or the free memory less the margin) set on the
// allocator that enforces it, resident or streamed (--stream, or the planner's choice) with the
// plan's chunking and activation placement, then the model loaded where that puts it with the
// feed its passes run over.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "kernels/matmul.h"
#include "model/llama.h"
#include "model/streaming.h"
#include "plan/planner.h"
#include "runtime/context.h"

namespace onn {

// What the user asked of the placement (tools/placement_flags.h defines the flags once).
struct PlacementFlags {
  Placement stream = Placement::auto_;  // --stream auto|on|off
  int64_t layers_per_chunk = 0;         // 0: the plan's, or 1
  uint64_t vram_budget = 0;             // 0: the device's free memory less kDeviceMemoryMargin
  Sharing share_loads = Sharing::auto_;  // training: micro-batches per weight load
  uint64_t host_ram = 0;                // --plan: another machine's host memory (0: this one's)
  QuantFormat quantize = QuantFormat::none;  // --quantize: the frozen base quantized while loading
  CpuMatmul cpu_matmul = CpuMatmul::f32;     // --cpu-matmul: the CPU backend's products
};

// --cpu-matmul for a run on ctx's device (set_cpu_matmul); bf16 is the CPU backend's, an
// InvalidArgument on CUDA (which multiplies bf16 weights already).
void apply_cpu_matmul(const Context& ctx, CpuMatmul m);

// The format the model's projection weights run in: a quantized folder's own, else --quantize.
QuantFormat base_format(const ModelConfig& cfg, const PlacementFlags& f);

// The budget of ctx's device allocator: `flag`, or on CUDA (when the allocator has none yet)
// what it holds plus the free memory less kDeviceMemoryMargin. Returns the budget in force (0:
// none). A flag on a device without a budgeted allocator (the CPU) is an InvalidArgument.
uint64_t apply_budget(Context& ctx, uint64_t flag);

// Resident, or streamed with these options; and how many of a step's micro-batches share each
// weight load (training).
struct PlacementChoice {
  QuantFormat quantize = QuantFormat::none;  // dense projection weights quantized while loading
  bool streamed = false;
  StreamOptions stream;
  int64_t micro_batches_per_load = 1;
};

// A model where the choice put it, with the feed its passes take (null: resident).
struct PlacedModel {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<StreamedWeights> stream;
  WeightFeed* feed() const { return stream.get(); }
};
// `dir` loaded resident on ctx's device, or to the host with a StreamedWeights over it.
PlacedModel load_placed(Context& ctx, const std::string& dir, const PlacementChoice& choice);

// Generation and evaluation: `batch` sequences of up to max_len tokens, prompts of
// prefill_tokens in all.
struct GenerationShape {
  int64_t batch = 1, max_len = 2048, prefill_tokens = 512;
};
// --plan: the generation plan for `device` (a CUDA device this machine lacks is planned on
// assumed figures and needs --vram-budget).
GenerationPlan generation_plan(Device device, const std::string& dir, const PlacementFlags& f,
                               const GenerationShape& shape);
// Sets the budget, decides (on CUDA with --stream auto the plan does) and loads.
PlacedModel place_for_generation(Context& ctx, const std::string& dir, const PlacementFlags& f,
                                 const GenerationShape& shape);

// Training: the planner's plan for `req` (whose budget apply_budget set), when it is consulted:
// to split the batch (--batch-rows, any device), or for LoRA on CUDA unless --stream off.
// InvalidArgument for --stream on with full training.
std::optional<Plan> training_plan(const PlanRequest& req, const PlacementFlags& f, Device device, bool split_batch);
// The choice for a run of grad_accum micro-batches per step: --stream, else the plan's; its
// chunking (--layers-per-chunk, else the plan's), activation offload (the plan's) and
// micro-batches per weight load (all of them with --share-loads on, the plan's with auto).
PlacementChoice training_choice(const PlanRequest& req, const PlacementFlags& f, const std::optional<Plan>& plan,
                                int64_t grad_accum);

}  // namespace onn
