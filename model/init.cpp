// onn-init's presets and the writer of random model folders.
#include "model/init.h"

#include <cmath>
#include <filesystem>
#include <functional>
#include <thread>

#include "kernels/counter_rng.h"
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

ModelConfig tied(ModelConfig m) {
  m.tie_word_embeddings = true;
  return m;
}

// N(0, 1) by Box-Muller from two counter-based uniforms.
double counter_normal(uint64_t key, uint64_t i) {
  const uint64_t h = counter_hash(key, i);
  const double u1 = (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);  // (0, 1)
  const double u2 = static_cast<double>(counter_hash(key ^ 0x5bd1e995ull, i) >> 11) * (1.0 / 9007199254740992.0);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Splits [0, n) over the hardware threads.
void parallel_for(size_t n, const std::function<void(size_t, size_t)>& body) {
  const size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), 1 + n / 65536);
  if (threads <= 1) return body(0, n);
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(body, n * t / threads, n * (t + 1) / threads);
  for (std::thread& th : pool) th.join();
}

}  // namespace

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> p = {
      {"tiny", "2 layers, 64 wide, 4 heads / 2 KV heads: fast CPU tests",
       shape(Architecture::llama, 64, 2, 4, 2, 160, 512, 10000, 512)},
      {"small", "12 layers, 1024 wide, 16 heads / 4 KV heads",
       shape(Architecture::llama, 1024, 12, 16, 4, 2816, 32000, 10000, 2048)},
      {"smollm-135m", "SmolLM-135M-like: 30 layers, 576 wide, 9 heads / 3 KV heads, 49k vocab, tied embeddings",
       tied(shape(Architecture::llama, 576, 30, 9, 3, 1536, 49152, 10000, 2048))},
      {"stories110m", "stories-110M-like: 12 layers, 768 wide, 12 heads",
       shape(Architecture::llama, 768, 12, 12, 12, 2048, 32000, 10000, 1024)},
      {"tinyllama", "TinyLlama-1.1B-like: 22 layers, 2048 wide, 32 heads / 4 KV heads",
       shape(Architecture::llama, 2048, 22, 32, 4, 5632, 32000, 10000, 2048)},
      {"llama2-7b", "Llama-2-7B-like: 32 layers, 4096 wide, 32 heads (no GQA), 32k vocab",
       shape(Architecture::llama, 4096, 32, 32, 32, 11008, 32000, 10000, 4096)},
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
  // By default the model's embedding rows match the tokenizer exactly; real checkpoints often
  // pad them (Phi-4: 100352 rows), which --vocab-size reproduces for shape-faithful runs.
  ONN_CHECK_ARG(opt.vocab_size == 0 || opt.vocab_size >= n_tokens, "the vocabulary size ", opt.vocab_size,
                " is smaller than the tokenizer's ", n_tokens, " tokens");
  c.vocab_size = opt.vocab_size > 0 ? opt.vocab_size : n_tokens;
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
                        {"tie_word_embeddings", c.tie_word_embeddings},
                        {"bos_token_id", bos},
                        {"eos_token_id", eos},
                        {"torch_dtype", torch_dtype_name(opt.dtype)}};
  const auto write_text = [&](const std::string& name, const std::string& text) {
    write_file_atomic((fs::path(dir) / name).string(), text);
  };
  const int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.num_attention_heads * c.head_dim,
                KD = c.num_key_value_heads * c.head_dim, V = c.vocab_size;
  std::vector<TensorSpec> specs;
  const auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    specs.push_back(TensorSpec{name, opt.dtype, std::move(shape)});
  };
  add("model.embed_tokens.weight", {V, C});
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, C});
  add("model.norm.weight", {C});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {C});
    add(p + "post_attention_layernorm.weight", {C});
    if (c.fused_qkv) {
      add(p + "self_attn.qkv_proj.weight", {HD + 2 * KD, C});
      add(p + "mlp.gate_up_proj.weight", {2 * F, C});
    } else {
      add(p + "self_attn.q_proj.weight", {HD, C});
      add(p + "self_attn.k_proj.weight", {KD, C});
      add(p + "self_attn.v_proj.weight", {KD, C});
      add(p + "mlp.gate_proj.weight", {F, C});
      add(p + "mlp.up_proj.weight", {F, C});
    }
    add(p + "self_attn.o_proj.weight", {C, HD});
    add(p + "mlp.down_proj.weight", {C, F});
  }
  // Tensors are produced one at a time (a Phi-4-sized model is larger than host memory) from
  // a counter-based generator keyed by (seed, tensor name, index), so the values do not
  // depend on the order, the thread count or the sharding.
  if (!opt.config_only) write_sharded_safetensors(dir, std::move(specs), [&](const TensorSpec& t, std::span<uint8_t> out) {
    const size_t n = out.size() / dtype_size(t.dtype);
    const bool norm = t.shape.size() == 1;
    const uint64_t key = counter_hash(opt.seed, fnv1a(t.name));
    parallel_for(n, [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i)
        store_from_double(out.data(), t.dtype, i, norm ? 1.0 : 0.02 * counter_normal(key, i));
    });
  }, opt.max_shard_bytes, {{"format", "pt"}, {"producer", "onn-init"}});
  // The text files last, config.json the very last: a folder whose writing was interrupted has
  // no config.json, so it never loads half-written.
  write_text("tokenizer.json", tok.dump() + "\n");
  write_text("tokenizer_config.json",
             nlohmann::json{{"bos_token", specials[0]}, {"eos_token", specials[1]}, {"model_max_length", c.max_position_embeddings}}
                     .dump(2) +
                 "\n");
  write_text("config.json", cfg.dump(2) + "\n");  // last: the folder is a model once it exists
}

}  // namespace onn
