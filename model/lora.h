// LoRA adapters for the LLaMA-family model in PEFT's layout: which projections and layers are
// adapted, the A/B matrices (fp32 masters plus compute-dtype copies), their initialisation as
// PEFT does it, and adapter_model.safetensors + adapter_config.json in and out.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/llama.h"
#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

// The adaptable projections of a block are its seven linear projections (model/llama.h).
using LoraTarget = Projection;
inline constexpr int kLoraTargets = kProjections;
using LoraTargets = std::array<bool, kLoraTargets>;

// "q,k,v,o,gate,up,down" in any order and subset, or "all-linear" (also accepts the PEFT
// module names q_proj, ..., qkv_proj, gate_up_proj). InvalidArgument lists the valid names.
LoraTargets parse_lora_targets(const std::string& text);
// "0-3,36-39,20" -> sorted distinct layer indices, each below num_layers.
std::vector<int64_t> parse_layer_ranges(const std::string& text, int64_t num_layers);

struct LoraSpec {
  int64_t rank = 8;        // R
  double alpha = 16.0;
  double dropout = 0.0;    // on the input of the LoRA branch, as PEFT
  bool rslora = false;     // scale alpha / sqrt(R) instead of alpha / R
  LoraTargets targets = {true, true, true, true, true, true, true};
  std::vector<int64_t> layers;  // adapted layers; empty: every layer

  double scale() const;
  bool on_layer(int64_t l) const;
};

// The dtype of trained parameters, their gradients and optimizer state: F32 (F64 for the CPU
// F64 reference used by gradient checks).
DType lora_master_dtype(DType compute);

// InvalidArgument when the spec does not fit the model (rank, alpha, dropout, a layer past the
// end, Phi-3's fused q/k/v or gate/up not targeted together).
void check_lora_spec(const ModelConfig& cfg, const LoraSpec& spec);

// One adapted module as PEFT sees it: Llama's q_proj, ..., down_proj; Phi-3's fused qkv_proj
// and gate_up_proj are one module each (one A, and B's rows split between q, k and v).
struct LoraModule {
  int64_t layer = 0;
  std::string name;  // "self_attn.q_proj", "mlp.gate_up_proj", ...
  Tensor a, b;       // (R, in), (out, R) lora_master_dtype: the trained masters
  Tensor a_c, b_c;   // the same in the model's compute dtype (the masters themselves for F32)
};

struct LoraAdapter {
  LoraSpec spec;
  std::vector<LoraModule> modules;  // by layer, then projection order
  // Per layer and target: the A and B the forward uses (compute dtype), undefined where the
  // target is not adapted. For a fused module, q, k and v share A and take row views of B.
  std::vector<std::array<Tensor, kLoraTargets>> a, b;

  int64_t parameter_count() const;
  // Recomputes a/b views after the modules' compute copies were replaced.
  void bind(const ModelConfig& cfg);
  // Refreshes a_c, b_c from the masters (after loading or an update outside AdamW).
  void sync_compute_copies(Context& ctx);
};

// A fresh adapter for `model`: A Kaiming-uniform (bound 1/sqrt(in), as PEFT's
// kaiming_uniform_(a=sqrt(5))), B zeros, so the adapted model starts equal to the base.
// Deterministic in `seed`. InvalidArgument when the spec does not fit the model (rank, a
// layer past the end, Phi-3 q/k/v or gate/up not targeted together).
LoraAdapter make_lora_adapter(Context& ctx, const LlamaModel& model, const LoraSpec& spec, uint64_t seed);

// The PEFT key of a module's tensors, without the ".lora_A.weight" / ".lora_B.weight" suffix:
// "base_model.model.model.layers.L.self_attn.q_proj".
std::string peft_module_key(const LoraModule& m);
// The (A, B) shapes, (R, in) and (out, R), of each module `spec` adapts in one layer of `c`, in
// module order (a fused module once).
std::vector<std::pair<Shape, Shape>> lora_layer_shapes(const ModelConfig& c, const LoraSpec& spec);

// PEFT files: adapter_model.safetensors (keys base_model.model.model.layers.L.<module>.lora_A.weight
// (R, in) and lora_B.weight (out, R), F32) and adapter_config.json. Written atomically.
void save_peft_adapter(const LoraAdapter& adapter, const ModelConfig& cfg, const std::string& dir,
                       const std::string& base_model);
// Reads a PEFT LoRA folder for `model`: checks peft_type, the modules against the model's
// shapes, and that every tensor the config implies is present (FormatError naming the file).
LoraAdapter load_peft_adapter(Context& ctx, const LlamaModel& model, const std::string& dir);
// The same for a model known by its config alone (no weights loaded); compute copies in `compute`.
LoraAdapter load_peft_adapter(Context& ctx, const ModelConfig& cfg, DType compute, const std::string& dir);

// Folds the adapter into the model's weights: W += scale * B A for every adapted target (in
// the compute dtype), as PEFT's merge_and_unload. Generation and evaluation then run the
// plain forward at full speed.
void merge_lora(Context& ctx, LlamaModel& model, const LoraAdapter& adapter);

struct MergeResult {
  int64_t tensors = 0;  // written
  int64_t merged = 0;   // of which had an adapter folded in
  std::vector<std::string> files;  // weight files written
};
// onn-merge: reads the base model folder tensor by tensor (one in memory at a time), adds
// scale * B A in F32 to every adapted weight, rounds back to the weight's own dtype and writes
// a Hugging Face folder: sharded safetensors (max_shard_bytes each, with the index), the
// tokenizer and generation files, and config.json. Everything is written into a temporary
// sibling folder renamed to `out_dir` at the end, so an interrupted merge leaves no folder.
// InvalidArgument when `out_dir` exists and is not empty, or is the model or adapter folder;
// FormatError when the adapter does not fit the model.
MergeResult merge_adapter_folder(const std::string& model_dir, const std::string& adapter_dir,
                                 const std::string& out_dir, uint64_t max_shard_bytes);

}  // namespace onn
