// onn-generate and onn-eval: the model resident on the device, or in host memory streamed
// through two device buffers when it does not fit the budget (--stream, --vram-budget,
// --layers-per-chunk), as train/planner.h's plan_generation decides.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "model/llama.h"
#include "model/streaming.h"
#include "train/planner.h"

namespace onn::tools {

struct InferenceFlags {
  std::string stream = "auto";
  int64_t layers_per_chunk = 0;
  uint64_t vram_budget = 0;
  bool plan = false;
  uint64_t host_ram = 0;  // --plan only
  void add_to(CLI::App& app, const std::string& what);
};

struct InferenceModel {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<StreamedWeights> stream;  // null: resident
  std::optional<GenerationPlan> plan;
};

// The plan for `batch` sequences of up to max_len tokens, prompts of prefill_tokens in all.
// --device cuda on a machine without one plans on assumed GPU figures (and needs --vram-budget).
GenerationPlan inference_plan(const std::string& device_flag, const std::string& model_dir, const InferenceFlags& f,
                              int64_t batch, int64_t max_len, int64_t prefill_tokens);
// Sets the allocator budget, decides resident or streamed and loads. An adapter can only be
// merged into a resident model (InvalidArgument otherwise).
InferenceModel load_inference_model(Context& ctx, const std::string& model_dir, const InferenceFlags& f, int64_t batch,
                                    int64_t max_len, int64_t prefill_tokens);

}  // namespace onn::tools
