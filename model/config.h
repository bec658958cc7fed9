// A Hugging Face config.json for the LLaMA family ONN runs: LlamaForCausalLM (Llama 2/3/3.x,
// TinyLlama, SmolLM), MistralForCausalLM, Qwen2ForCausalLM (q/k/v biases) and
// Phi3ForCausalLM (fused qkv_proj and gate_up_proj; Phi-4 uses it). Both the transformers 4
// layout (rope_theta + rope_scaling) and the transformers 5 one (rope_parameters) are read.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/quant.h"
#include "kernels/rope.h"
#include "runtime/dtype.h"

namespace onn {

enum class Architecture { llama, mistral, qwen2, phi3 };

struct ModelConfig {
  Architecture arch = Architecture::llama;
  std::string architecture;       // the HF class name, e.g. "LlamaForCausalLM"
  int64_t hidden_size = 0;        // C
  int64_t intermediate_size = 0;  // F
  int64_t num_attention_heads = 0;  // H
  int64_t num_key_value_heads = 0;  // KVH
  int64_t head_dim = 0;             // D
  int64_t num_hidden_layers = 0;    // L
  int64_t vocab_size = 0;           // V
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;              // head_dim, theta, partial_rotary_factor, scaling
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and o for Llama's attention_bias) carry biases
  bool o_bias = false;          // o_proj has a bias (Llama attention_bias; not Qwen2)
  bool fused_qkv = false;       // Phi-3: self_attn.qkv_proj
  bool fused_gate_up = false;   // Phi-3: mlp.gate_up_proj
  DType torch_dtype = DType::f32;
  std::optional<int64_t> sliding_window;  // set only when the model actually uses one
  std::vector<int64_t> bos_token_ids, eos_token_ids;
  // config.json's quantization_config: a bitsandbytes 4-bit folder (quant_method
  // "bitsandbytes", load_in_4bit, bnb_4bit_quant_type "nf4") stores its projection weights as
  // nf4; none for a plain folder. Other methods are refused by name.
  QuantFormat stored_quant = QuantFormat::none;
};

// The supported architectures, for error messages: "LlamaForCausalLM, MistralForCausalLM, ...".
std::string supported_architectures();

// torch's name of a float dtype as config.json and bitsandbytes' quant_state write it ("float32",
// "bfloat16", "float16"), and back (nullopt for any other name).
std::string_view torch_dtype_name(DType t);
std::optional<DType> dtype_from_torch_name(std::string_view name);

// Parses a config.json document; `source` names it in errors (FormatError for malformed or
// inconsistent fields, InvalidArgument for a valid but unsupported model or field value).
ModelConfig parse_model_config(const nlohmann::json& doc, const std::string& source);
// Reads `path` (a config.json, or a folder holding one).
ModelConfig load_model_config(const std::string& path);

// Refuses a context longer than what the model's attention supports: a sliding window
// shorter than `context` (ONN's attention is full causal) or max_position_embeddings.
void check_context_length(const ModelConfig& cfg, int64_t context, const std::string& source);

// from_dir's config.json, changed by `edit`, written to to_dir (atomically).
void write_edited_config(const std::string& from_dir, const std::string& to_dir,
                         const std::function<void(nlohmann::ordered_json&)>& edit);

// Copies the files that travel with a model's weights, other than config.json (which a
// writer puts last): tokenizer.json, tokenizer_config.json, special_tokens_map.json,
// generation_config.json, chat_template.jinja and tokenizer.model, those present in `from`.
void copy_model_side_files(const std::string& from, const std::string& to);

}  // namespace onn
