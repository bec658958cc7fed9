// onn-init's presets and the writer of random model folders.
#include "model/init.h"

#include <filesystem>
#include <random>

#include "model/tokenizer_train.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/safetensors.h"

namespace onn {

namespace {

ModelConfig shape(Architecture arch, int64_t c, int64_t layers, int64_t heads, int64_t kv, int64_t f, int64_t v,
                  double theta, int64_t max_pos) {
  ModelConfig m;
  m.arch = arch;
  m.architecture = arch == Architecture::phi3 ? "Phi3ForCausalLM" : "LlamaForCausalLM";
  m.hidden_size = c;
  m.num_hidden_layers = layers;
  m.num_attention_heads = heads;
  m.num_key_value_heads = kv;
  m.head_dim = c / heads;
  m.intermediate_size = f;
  m.vocab_size = v;
  m.rms_norm_eps = 1e-5;
  m.rope.theta = theta;
  m.rope.head_dim = m.head_dim;
  m.max_position_embeddings = max_pos;
  m.fused_qkv = m.fused_gate_up = arch == Architecture::phi3;
  return m;
}

}  // namespace

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> p = {
      {"tiny", "2 layers, 64 wide, 4 heads / 2 KV heads: fast CPU tests",
       shape(Architecture::llama, 64, 2, 4, 2, 160, 512, 10000, 512)},
      {"small", "12 layers, 1024 wide, 16 heads / 4 KV heads",
       shape(Architecture::llama, 1024, 12, 16, 4, 2816, 32000, 10000, 2048)},
      {"stories110m", "stories-110M-like: 12 layers, 768 wide, 12 heads",
       shape(Architecture::llama, 768, 12, 12, 12, 2048, 32000, 10000, 1024)},
      {"tinyllama", "TinyLlama-1.1B-like: 22 layers, 2048 wide, 32 heads / 4 KV heads",
       shape(Architecture::llama, 2048, 22, 32, 4, 5632, 32000, 10000, 2048)},
      {"llama3-8b", "Llama-3-8B-like: 32 layers, 4096 wide, 32 heads / 8 KV heads, 128k vocab",
       shape(Architecture::llama, 4096, 32, 32, 8, 14336, 128256, 500000, 8192)},
      {"phi4", "Phi-4-like (Phi3ForCausalLM): 40 layers, 5120 wide, 40 heads / 10 KV heads, 100k vocab",
       shape(Architecture::phi3, 5120, 40, 40, 10, 17920, 100352, 250000, 16384)},
  };
  return p;
}

const ModelPreset& find_preset(const std::string& name) {
  std::string names;
  for (const ModelPreset& p : model_presets()) {
    if (p.name == name) return p;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  throw InvalidArgument("unknown preset \"" + name + "\"; presets: " + names);
}

void write_random_model(const ModelPreset& preset, const std::string& dir, const InitOptions& opt) {
  namespace fs = std::filesystem;
  ModelConfig c = preset.config;
  const std::vector<std::string> specials{"<|bos|>", "<|eos|>"};
  const int64_t vocab = opt.tokenizer_vocab > 0 ? opt.tokenizer_vocab : c.vocab_size;
  const nlohmann::json tok = train_byte_level_bpe(opt.tokenizer_text, vocab, specials);
  const int64_t n_tokens = static_cast<int64_t>(tok["model"]["vocab"].size() + tok["added_tokens"].size());
  c.vocab_size = n_tokens;  // the model's embedding rows match the tokenizer exactly
  const int64_t bos = tok["added_tokens"][0]["id"].get<int64_t>(), eos = tok["added_tokens"][1]["id"].get<int64_t>();
  fs::create_directories(dir);

  nlohmann::json cfg = {{"architectures", {c.architecture}},
                        {"model_type", c.arch == Architecture::phi3 ? "phi3" : "llama"},
                        {"hidden_size", c.hidden_size},
                        {"intermediate_size", c.intermediate_size},
                        {"num_attention_heads", c.num_attention_heads},
                        {"num_key_value_heads", c.num_key_value_heads},
                        {"head_dim", c.head_dim},
                        {"num_hidden_layers", c.num_hidden_layers},
                        {"vocab_size", c.vocab_size},
                        {"max_position_embeddings", c.max_position_embeddings},
                        {"rms_norm_eps", c.rms_norm_eps},
                        {"rope_theta", c.rope.theta},
                        {"hidden_act", "silu"},
                        {"tie_word_embeddings", false},
                        {"bos_token_id", bos},
                        {"eos_token_id", eos},
                        {"torch_dtype", opt.dtype == DType::bf16 ? "bfloat16" : "float32"}};
  const auto write_text = [&](const std::string& name, const std::string& text) {
    AtomicFile f((fs::path(dir) / name).string());
    f.write(text.data(), text.size());
    f.commit();
  };
  write_text("config.json", cfg.dump(2) + "\n");
  write_text("tokenizer.json", tok.dump() + "\n");
  write_text("tokenizer_config.json",
             nlohmann::json{{"bos_token", specials[0]}, {"eos_token", specials[1]}, {"model_max_length", c.max_position_embeddings}}
                     .dump(2) +
                 "\n");

  std::mt19937_64 rng(opt.seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<std::pair<std::string, Tensor>> tensors;
  const auto random = [&](const std::string& name, const Shape& s) {
    Tensor t = Tensor::empty(s, opt.dtype);
    for (int64_t i = 0; i < t.numel(); ++i) store_from_double(t.data(), opt.dtype, static_cast<size_t>(i), normal(rng));
    tensors.emplace_back(name, std::move(t));
  };
  const auto ones = [&](const std::string& name, int64_t n) {
    Tensor t = Tensor::empty(Shape{n}, opt.dtype);
    for (int64_t i = 0; i < n; ++i) store_from_double(t.data(), opt.dtype, static_cast<size_t>(i), 1.0);
    tensors.emplace_back(name, std::move(t));
  };
  const int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.num_attention_heads * c.head_dim,
                KD = c.num_key_value_heads * c.head_dim, V = c.vocab_size;
  random("model.embed_tokens.weight", Shape{V, C});
  random("lm_head.weight", Shape{V, C});
  ones("model.norm.weight", C);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ones(p + "input_layernorm.weight", C);
    ones(p + "post_attention_layernorm.weight", C);
    if (c.fused_qkv) {
      random(p + "self_attn.qkv_proj.weight", Shape{HD + 2 * KD, C});
      random(p + "mlp.gate_up_proj.weight", Shape{2 * F, C});
    } else {
      random(p + "self_attn.q_proj.weight", Shape{HD, C});
      random(p + "self_attn.k_proj.weight", Shape{KD, C});
      random(p + "self_attn.v_proj.weight", Shape{KD, C});
      random(p + "mlp.gate_proj.weight", Shape{F, C});
      random(p + "mlp.up_proj.weight", Shape{F, C});
    }
    random(p + "self_attn.o_proj.weight", Shape{C, HD});
    random(p + "mlp.down_proj.weight", Shape{C, F});
  }
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}, {"producer", "onn-init"}});
}

}  // namespace onn
