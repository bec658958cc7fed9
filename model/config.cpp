// config.json parsing: the fields ONN uses are checked for type and range; fields whose
// values would change the computation in ways ONN does not implement are refused by name.
#include "model/config.h"

#include <filesystem>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"

namespace onn {

namespace {

struct ArchInfo {
  const char* hf_class;
  const char* model_type;
  Architecture arch;
};
constexpr ArchInfo kArchs[] = {{"LlamaForCausalLM", "llama", Architecture::llama},
                               {"MistralForCausalLM", "mistral", Architecture::mistral},
                               {"Qwen2ForCausalLM", "qwen2", Architecture::qwen2},
                               {"Phi3ForCausalLM", "phi3", Architecture::phi3}};

class Reader {
 public:
  Reader(const nlohmann::json& doc, const std::string& source) : doc_(doc), source_(source) {}

  [[noreturn]] void bad(const std::string& field, const std::string& why) const {
    throw FormatError(source_ + ": field \"" + field + "\" " + why);
  }
  [[noreturn]] void unsupported(const std::string& field, const std::string& why) const {
    throw InvalidArgument(source_ + ": field \"" + field + "\" " + why);
  }
  const std::string& source() const { return source_; }
  const nlohmann::json* find(const std::string& field) const {
    const auto it = doc_.find(field);
    return it == doc_.end() || it->is_null() ? nullptr : &*it;
  }
  int64_t integer(const std::string& field, std::optional<int64_t> fallback = std::nullopt, int64_t min = 1) const {
    const nlohmann::json* v = find(field);
    if (v == nullptr) {
      if (!fallback) bad(field, "is missing");
      return *fallback;
    }
    if (!v->is_number_integer()) bad(field, "must be an integer, got " + v->dump());
    const int64_t x = v->get<int64_t>();
    if (x < min) bad(field, "must be at least " + std::to_string(min) + ", got " + std::to_string(x));
    return x;
  }
  double number(const nlohmann::json& obj, const std::string& field, double fallback, const std::string& where) const {
    const auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_number()) bad(where + field, "must be a number, got " + it->dump());
    return it->get<double>();
  }
  double number(const std::string& field, double fallback) const { return number(doc_, field, fallback, ""); }
  bool boolean(const std::string& field, bool fallback) const {
    const nlohmann::json* v = find(field);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) bad(field, "must be true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string string(const std::string& field, const std::string& fallback) const {
    const nlohmann::json* v = find(field);
    if (v == nullptr) return fallback;
    if (!v->is_string()) bad(field, "must be a string, got " + v->dump());
    return v->get<std::string>();
  }
  std::vector<int64_t> ids(const std::string& field) const {
    const nlohmann::json* v = find(field);
    std::vector<int64_t> out;
    if (v == nullptr) return out;
    const auto one = [&](const nlohmann::json& x) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0) bad(field, "must hold non-negative integers, got " + v->dump());
      out.push_back(x.get<int64_t>());
    };
    if (v->is_array()) {
      for (const auto& x : *v) one(x);
    } else {
      one(*v);
    }
    return out;
  }

 private:
  const nlohmann::json& doc_;
  std::string source_;
};

// rope_scaling (transformers 4) or rope_parameters (transformers 5) into cfg.rope.scaling.
void read_rope(const Reader& r, const nlohmann::json& doc, ModelConfig& cfg) {
  const nlohmann::json* params = r.find("rope_parameters");
  const char* name = params ? "rope_parameters" : "rope_scaling";
  if (params == nullptr) params = r.find("rope_scaling");
  cfg.rope.theta = r.number("rope_theta", 10000.0);
  cfg.rope.partial_rotary_factor = r.number("partial_rotary_factor", 1.0);
  if (params == nullptr) return;
  if (!params->is_object()) r.bad(name, "must be an object, got " + params->dump());
  const std::string where = std::string(name) + ".";
  cfg.rope.theta = r.number(*params, "rope_theta", cfg.rope.theta, where);
  cfg.rope.partial_rotary_factor = r.number(*params, "partial_rotary_factor", cfg.rope.partial_rotary_factor, where);
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    const auto it = params->find(key);
    if (it != params->end() && !it->is_null()) {
      if (!it->is_string()) r.bad(where + key, "must be a string");
      type = it->get<std::string>();
      break;
    }
  }
  RopeScaling& s = cfg.rope.scaling;
  if (type == "default") return;
  if (type == "linear") {
    s.type = RopeScaling::Type::linear;
  } else if (type == "llama3") {
    s.type = RopeScaling::Type::llama3;
    s.low_freq_factor = r.number(*params, "low_freq_factor", 1.0, where);
    s.high_freq_factor = r.number(*params, "high_freq_factor", 4.0, where);
    const auto it = params->find("original_max_position_embeddings");
    if (it == params->end() || !it->is_number_integer() || it->get<int64_t>() < 1)
      r.bad(where + "original_max_position_embeddings", "must be a positive integer for llama3 scaling");
    s.original_max_position_embeddings = it->get<int64_t>();
  } else {
    r.unsupported(where + "rope_type", "is \"" + type + "\"; ONN supports default, linear and llama3");
  }
  s.factor = r.number(*params, "factor", 1.0, where);
  if (!(s.factor > 0)) r.bad(where + "factor", "must be positive");
}

// quantization_config: only bitsandbytes' 4-bit nf4 layout is read; any other method, bit width or
// 4-bit type is refused by name (the loader reads the per-tensor quant_state, which must agree).
QuantFormat read_quantization(const Reader& r) {
  const nlohmann::json* q = r.find("quantization_config");
  if (q == nullptr) return QuantFormat::none;
  if (!q->is_object()) r.bad("quantization_config", "must be an object, got " + q->dump());
  const Reader qr(*q, r.source() + ": quantization_config");
  const std::string method = qr.string("quant_method", "");
  if (method != "bitsandbytes")
    qr.unsupported("quant_method", "is \"" + method + "\"; ONN reads bitsandbytes 4-bit (nf4) folders and quantizes "
                   "plain ones itself (--quantize nf4|int8|fp8)");
  if (qr.boolean("load_in_8bit", false))
    qr.unsupported("load_in_8bit", "is true; ONN reads bitsandbytes 4-bit folders only (load an unquantized folder "
                   "with --quantize int8 instead)");
  if (!qr.boolean("load_in_4bit", false)) qr.unsupported("load_in_4bit", "is not true: no bitsandbytes layout to read");
  const std::string type = qr.string("bnb_4bit_quant_type", "fp4");
  if (type != "nf4") qr.unsupported("bnb_4bit_quant_type", "is \"" + type + "\"; ONN implements nf4");
  const std::string storage = qr.string("bnb_4bit_quant_storage", "uint8");
  if (storage != "uint8") qr.unsupported("bnb_4bit_quant_storage", "is \"" + storage + "\"; ONN reads uint8");
  return QuantFormat::nf4;
}


}  // namespace

std::string supported_architectures() {
  std::string s;
  for (const ArchInfo& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.hf_class);
  return s;
}

ModelConfig parse_model_config(const nlohmann::json& doc, const std::string& source) {
  if (!doc.is_object()) throw FormatError(source + ": not a JSON object");
  const Reader r(doc, source);
  ModelConfig cfg;
  // The class from "architectures" (what save_pretrained writes for a model), else model_type.
  const ArchInfo* info = nullptr;
  if (const nlohmann::json* a = r.find("architectures")) {
    if (!a->is_array() || a->size() != 1 || !(*a)[0].is_string())
      r.bad("architectures", "must be a list of one class name, got " + a->dump());
    cfg.architecture = (*a)[0].get<std::string>();
    for (const ArchInfo& x : kArchs)
      if (cfg.architecture == x.hf_class) info = &x;
    if (info == nullptr)
      throw InvalidArgument(source + ": architecture \"" + cfg.architecture + "\" is not supported; ONN runs " +
                            supported_architectures());
  } else {
    const std::string type = r.string("model_type", "");
    for (const ArchInfo& x : kArchs)
      if (type == x.model_type) info = &x;
    if (info == nullptr)
      throw InvalidArgument(source + ": model_type \"" + type + "\" (and no \"architectures\") is not supported; ONN runs " +
                            supported_architectures());
    cfg.architecture = info->hf_class;
  }
  cfg.arch = info->arch;

  cfg.hidden_size = r.integer("hidden_size");
  cfg.intermediate_size = r.integer("intermediate_size");
  cfg.num_attention_heads = r.integer("num_attention_heads");
  cfg.num_key_value_heads = r.integer("num_key_value_heads", cfg.num_attention_heads);
  cfg.num_hidden_layers = r.integer("num_hidden_layers");
  cfg.vocab_size = r.integer("vocab_size");
  cfg.max_position_embeddings = r.integer("max_position_embeddings", int64_t{2048});
  if (cfg.num_attention_heads % cfg.num_key_value_heads != 0)
    r.bad("num_key_value_heads", "(" + std::to_string(cfg.num_key_value_heads) + ") must divide num_attention_heads (" +
                                     std::to_string(cfg.num_attention_heads) + ")");
  if (r.find("head_dim") != nullptr) {
    cfg.head_dim = r.integer("head_dim");
  } else if (cfg.hidden_size % cfg.num_attention_heads == 0) {
    cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads;
  } else {
    r.bad("head_dim", "is missing and hidden_size is not a multiple of num_attention_heads");
  }
  if (cfg.head_dim % 2 != 0) r.bad("head_dim", "must be even for rotary embeddings, got " + std::to_string(cfg.head_dim));
  cfg.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  if (!(cfg.rms_norm_eps > 0)) r.bad("rms_norm_eps", "must be positive");

  read_rope(r, doc, cfg);
  cfg.rope.head_dim = cfg.head_dim;
  try {
    rope_inv_freq(cfg.rope);  // validates theta, partial factor and scaling parameters
  } catch (const InvalidArgument& e) {
    throw FormatError(source + ": " + e.what());
  }

  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") r.unsupported("hidden_act", "is \"" + act + "\"; ONN's MLP is SwiGLU (silu)");
  if (r.boolean("mlp_bias", false)) r.unsupported("mlp_bias", "is true; ONN's MLP projections have no biases");
  const int64_t tp = r.integer("pretraining_tp", int64_t{1});
  (void)tp;  // slicing for tensor-parallel pretraining gives the same result; nothing to do
  cfg.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  switch (cfg.arch) {
    case Architecture::llama:
    case Architecture::mistral:
      cfg.attention_bias = cfg.o_bias = r.boolean("attention_bias", false);
      break;
    case Architecture::qwen2:
      cfg.attention_bias = true;  // q/k/v always carry biases in Qwen2; o_proj does not
      break;
    case Architecture::phi3:
      cfg.fused_qkv = cfg.fused_gate_up = true;
      break;
  }

  // Sliding windows: Mistral and Phi-3 use one whenever it is set; Qwen2 only with
  // use_sliding_window.
  if (r.find("sliding_window") != nullptr) {
    const int64_t w = r.integer("sliding_window");
    if (cfg.arch != Architecture::qwen2 || r.boolean("use_sliding_window", false)) cfg.sliding_window = w;
  }

  const std::string dt = r.string("dtype", r.string("torch_dtype", "float32"));
  const std::optional<DType> torch_dtype = dtype_from_torch_name(dt);
  if (!torch_dtype)
    r.unsupported(r.find("dtype") ? "dtype" : "torch_dtype", "is \"" + dt + "\"; ONN reads float32, bfloat16, float16");
  cfg.torch_dtype = *torch_dtype;
  cfg.bos_token_ids = r.ids("bos_token_id");
  cfg.eos_token_ids = r.ids("eos_token_id");
  cfg.stored_quant = read_quantization(r);
  return cfg;
}

std::string_view torch_dtype_name(DType t) {
  switch (t) {
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
    default: return "float32";
  }
}

std::optional<DType> dtype_from_torch_name(std::string_view name) {
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    if (name == torch_dtype_name(t)) return t;
  return std::nullopt;
}

ModelConfig load_model_config(const std::string& path) {
  std::string file = path;
  if (std::filesystem::is_directory(path)) file = (std::filesystem::path(path) / "config.json").string();
  if (!std::filesystem::exists(file)) throw IoError(file + ": no such file (a model folder holds config.json)");
  return parse_model_config(read_json_file(file, kMaxConfigFileBytes), file);
}

void check_context_length(const ModelConfig& cfg, int64_t context, const std::string& source) {
  if (cfg.sliding_window && context > *cfg.sliding_window)
    throw InvalidArgument(source + ": " + cfg.architecture + " uses a sliding window of " +
                          std::to_string(*cfg.sliding_window) + " tokens and ONN's attention is full causal; use a " +
                          "context of at most " + std::to_string(*cfg.sliding_window) + " (asked for " +
                          std::to_string(context) + ")");
  if (context > cfg.max_position_embeddings)
    throw InvalidArgument(source + ": context " + std::to_string(context) + " exceeds max_position_embeddings (" +
                          std::to_string(cfg.max_position_embeddings) + ")");
}

void write_edited_config(const std::string& from_dir, const std::string& to_dir,
                         const std::function<void(nlohmann::ordered_json&)>& edit) {
  const std::string from = (std::filesystem::path(from_dir) / "config.json").string();
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(read_file(from, kMaxConfigFileBytes), nullptr, false);
  if (config.is_discarded() || !config.is_object()) throw FormatError(from + ": not a JSON object");
  edit(config);
  write_file_atomic((std::filesystem::path(to_dir) / "config.json").string(), config.dump(2) + "\n");
}

void copy_model_side_files(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                        "chat_template.jinja", "tokenizer.model"}) {
    std::error_code ec;
    if (!fs::exists(fs::path(from) / f, ec)) continue;
    fs::copy_file(fs::path(from) / f, fs::path(to) / f, fs::copy_options::overwrite_existing, ec);
    if (ec) throw IoError((fs::path(to) / f).string() + ": cannot copy from " + from + ": " + ec.message());
  }
}

}  // namespace onn
