// Randomly initialised model folders (onn-init): a config.json, model.safetensors and a
// byte-level BPE tokenizer.json (+ tokenizer_config.json), from presets that range from a
// tiny CPU test model to real shapes (Llama-3-8B, Phi-4). No downloads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace onn {

struct ModelPreset {
  std::string name, description;
  ModelConfig config;  // vocab_size is the tokenizer's
};

const std::vector<ModelPreset>& model_presets();
const ModelPreset& find_preset(const std::string& name);  // InvalidArgument listing the names

struct InitOptions {
  uint64_t seed = 0;
  DType dtype = DType::bf16;     // of the written weights
  std::string tokenizer_text;    // merges are learned from it; empty: byte-level base vocabulary
  int64_t tokenizer_vocab = 0;   // 0: the preset's vocab_size
  int64_t vocab_size = 0;        // embedding rows, >= the tokenizer's size; 0: the tokenizer's size
  uint64_t max_shard_bytes = 5'000'000'000;  // larger models are sharded, as save_pretrained does
  bool config_only = false;      // config.json and the tokenizer, no weights (for --plan)
};

// Writes the folder (created if missing; existing files are replaced atomically). Weights are
// N(0, 0.02), norms 1; config.json as transformers writes it for the architecture. Tensors
// are generated and written one at a time, so host memory holds at most the largest tensor.
void write_random_model(const ModelPreset& preset, const std::string& dir, const InitOptions& opt);

}  // namespace onn
