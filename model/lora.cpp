// LoRA adapters: target and layer parsing, PEFT's initialisation and its file layout.
#include "model/lora.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "kernels/counter_rng.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "model/llama.h"
#include "model/quantized.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"

namespace onn {

namespace {

constexpr const char* kKeyPrefix = "base_model.model.";  // PEFT's wrapper before the model's own names

// (out, in) of target t in a block.
std::pair<int64_t, int64_t> target_shape(const ModelConfig& c, int t) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.num_attention_heads * c.head_dim,
                KD = c.num_key_value_heads * c.head_dim;
  switch (static_cast<LoraTarget>(t)) {
    case LoraTarget::q: return {HD, C};
    case LoraTarget::k:
    case LoraTarget::v: return {KD, C};
    case LoraTarget::o: return {C, HD};
    case LoraTarget::gate:
    case LoraTarget::up: return {F, C};
    case LoraTarget::down: return {C, F};
  }
  return {0, 0};
}

// A module of the architecture: its PEFT name and the targets it covers (fused: several).
struct ModuleKind {
  std::string name;
  std::vector<int> targets;
};

std::vector<ModuleKind> module_kinds(const ModelConfig& c) {
  std::vector<ModuleKind> m;
  if (c.fused_qkv)
    m.push_back({"self_attn.qkv_proj", {0, 1, 2}});
  else
    m.insert(m.end(), {{"self_attn.q_proj", {0}}, {"self_attn.k_proj", {1}}, {"self_attn.v_proj", {2}}});
  m.push_back({"self_attn.o_proj", {3}});
  if (c.fused_gate_up)
    m.push_back({"mlp.gate_up_proj", {4, 5}});
  else
    m.insert(m.end(), {{"mlp.gate_proj", {4}}, {"mlp.up_proj", {5}}});
  m.push_back({"mlp.down_proj", {6}});
  return m;
}

std::string short_name(const std::string& module) { return module.substr(module.find('.') + 1); }

}  // namespace

LoraTargets parse_lora_targets(const std::string& text) {
  LoraTargets t{};
  if (text == "all-linear" || text == "all") {
    t.fill(true);
    return t;
  }
  const std::map<std::string, std::vector<int>> names = {
      {"q", {0}}, {"k", {1}}, {"v", {2}}, {"o", {3}}, {"gate", {4}}, {"up", {5}}, {"down", {6}},
      {"q_proj", {0}}, {"k_proj", {1}}, {"v_proj", {2}}, {"o_proj", {3}}, {"gate_proj", {4}},
      {"up_proj", {5}}, {"down_proj", {6}}, {"qkv_proj", {0, 1, 2}}, {"gate_up_proj", {4, 5}}};
  size_t start = 0;
  bool any = false;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string name = text.substr(start, comma - start);
    const auto it = names.find(name);
    if (it == names.end())
      throw InvalidArgument("unknown LoRA target \"" + name +
                            "\"; targets: q, k, v, o, gate, up, down (comma-separated) or all-linear");
    for (int i : it->second) t[static_cast<size_t>(i)] = true;
    any = true;
    start = comma + 1;
  }
  ONN_CHECK_ARG(any, "no LoRA targets given");
  return t;
}

std::vector<int64_t> parse_layer_ranges(const std::string& text, int64_t num_layers) {
  std::set<int64_t> layers;
  size_t start = 0;
  const auto number = [&](const std::string& s) {
    ONN_CHECK_ARG(!s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos,
                  "layer range \"", text, "\": \"", s, "\" is not a layer number");
    const int64_t v = std::stoll(s);
    ONN_CHECK_ARG(v < num_layers, "layer range \"", text, "\": layer ", v, " is past the model's ", num_layers,
                  " layers (0-", num_layers - 1, ")");
    return v;
  };
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string part = text.substr(start, comma - start);
    const size_t dash = part.find('-');
    const int64_t lo = number(part.substr(0, dash));
    const int64_t hi = dash == std::string::npos ? lo : number(part.substr(dash + 1));
    ONN_CHECK_ARG(lo <= hi, "layer range \"", text, "\": ", lo, "-", hi, " is empty");
    for (int64_t l = lo; l <= hi; ++l) layers.insert(l);
    start = comma + 1;
  }
  return {layers.begin(), layers.end()};
}

DType lora_master_dtype(DType compute) { return compute == DType::f64 ? DType::f64 : DType::f32; }

double LoraSpec::scale() const {
  return rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

bool LoraSpec::on_layer(int64_t l) const {
  return layers.empty() || std::find(layers.begin(), layers.end(), l) != layers.end();
}

int64_t LoraAdapter::parameter_count() const {
  int64_t n = 0;
  for (const LoraModule& m : modules) n += m.a.numel() + m.b.numel();
  return n;
}

void LoraAdapter::bind(const ModelConfig& cfg) {
  a.assign(static_cast<size_t>(cfg.num_hidden_layers), {});
  b.assign(static_cast<size_t>(cfg.num_hidden_layers), {});
  const std::vector<ModuleKind> kinds = module_kinds(cfg);
  for (const LoraModule& m : modules) {
    const auto kind = std::find_if(kinds.begin(), kinds.end(), [&](const ModuleKind& k) { return k.name == m.name; });
    ONN_ASSERT(kind != kinds.end());
    int64_t row = 0;
    for (int t : kind->targets) {
      const int64_t out = target_shape(cfg, t).first;
      a[static_cast<size_t>(m.layer)][static_cast<size_t>(t)] = m.a_c;
      b[static_cast<size_t>(m.layer)][static_cast<size_t>(t)] = m.b_c.slice(row, row + out);
      row += out;
    }
  }
}

void LoraAdapter::sync_compute_copies(Context& ctx) {
  for (LoraModule& m : modules) {
    if (m.a_c.data() == m.a.data()) continue;
    cast(ctx, m.a, m.a_c);
    cast(ctx, m.b, m.b_c);
  }
}

namespace {

// Every module `spec` adapts on `c`, by layer then projection, with uninitialised tensors: the
// masters (lora_master_dtype) packed in one allocation, the compute copies in another (unless
// they are the masters; Tensor::empty_packed: alone, the allocator would hold a wide
// projection's B, 2.2 MiB in F32 on Phi-4, as 4 MiB).
std::vector<LoraModule> new_modules(Context& ctx, const ModelConfig& c, DType compute, const LoraSpec& spec) {
  std::vector<LoraModule> mods;
  std::vector<std::pair<Shape, DType>> masters, copies;
  const DType master = lora_master_dtype(compute);
  const std::vector<std::pair<Shape, Shape>> shapes = lora_layer_shapes(c, spec);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (!spec.on_layer(l)) continue;
    size_t i = 0;
    for (const ModuleKind& kind : module_kinds(c)) {
      if (!spec.targets[static_cast<size_t>(kind.targets[0])]) continue;
      LoraModule m;
      m.layer = l;
      m.name = kind.name;
      mods.push_back(std::move(m));
      for (const Shape& sh : {shapes[i].first, shapes[i].second}) {
        masters.emplace_back(sh, master);
        copies.emplace_back(sh, compute);
      }
      ++i;
    }
  }
  const std::vector<Tensor> mt = Tensor::empty_packed(masters, ctx.allocator());
  const std::vector<Tensor> ct = compute == master ? mt : Tensor::empty_packed(copies, ctx.allocator());
  for (size_t i = 0; i < mods.size(); ++i) {
    mods[i].a = mt[2 * i];
    mods[i].b = mt[2 * i + 1];
    mods[i].a_c = ct[2 * i];
    mods[i].b_c = ct[2 * i + 1];
  }
  return mods;
}

}  // namespace

std::string peft_module_key(const LoraModule& m) { return kKeyPrefix + layer_prefix(m.layer) + m.name; }

std::vector<std::pair<Shape, Shape>> lora_layer_shapes(const ModelConfig& c, const LoraSpec& spec) {
  std::vector<std::pair<Shape, Shape>> shapes;
  for (const ModuleKind& kind : module_kinds(c)) {
    if (!spec.targets[static_cast<size_t>(kind.targets[0])]) continue;
    int64_t out = 0;
    for (int t : kind.targets) out += target_shape(c, t).first;
    const int64_t in = target_shape(c, kind.targets[0]).second;
    shapes.emplace_back(Shape{spec.rank, in}, Shape{out, spec.rank});
  }
  return shapes;
}

void check_lora_spec(const ModelConfig& c, const LoraSpec& spec) {
  ONN_CHECK_ARG(spec.rank >= 1 && spec.rank <= 4096, "LoRA rank must be in [1, 4096], got ", spec.rank);
  ONN_CHECK_ARG(std::isfinite(spec.alpha) && spec.alpha > 0, "LoRA alpha must be positive, got ", spec.alpha);
  ONN_CHECK_ARG(spec.dropout >= 0 && spec.dropout < 1, "LoRA dropout must be in [0, 1), got ", spec.dropout);
  ONN_CHECK_ARG(std::any_of(spec.targets.begin(), spec.targets.end(), [](bool b) { return b; }),
                "no LoRA targets selected");
  for (int64_t l : spec.layers)
    ONN_CHECK_ARG(l >= 0 && l < c.num_hidden_layers, "LoRA layer ", l, " is past the model's ", c.num_hidden_layers,
                  " layers");
  for (const ModuleKind& k : module_kinds(c)) {
    if (k.targets.size() < 2) continue;
    const bool first = spec.targets[static_cast<size_t>(k.targets[0])];
    for (int t : k.targets)
      ONN_CHECK_ARG(spec.targets[static_cast<size_t>(t)] == first, c.architecture, " fuses ",
                    k.targets.size() == 3 ? "q, k and v" : "gate and up", " into ", short_name(k.name),
                    ": target all of them or none");
  }
}

LoraAdapter make_lora_adapter(Context& ctx, const LlamaModel& model, const LoraSpec& spec, uint64_t seed) {
  const ModelConfig& c = model.config();
  check_lora_spec(c, spec);
  LoraAdapter ad;
  ad.spec = spec;
  for (LoraModule& m : new_modules(ctx, c, model.dtype(), spec)) {
    // Kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in)), from a counter-based
    // generator keyed by (seed, module number), so layers differ and runs repeat.
    Tensor host = Tensor::empty(m.a.shape(), m.a.dtype());
    const double bound = 1.0 / std::sqrt(static_cast<double>(m.a.dim(1)));
    const uint64_t key = counter_hash(seed, ad.modules.size());
    for (int64_t i = 0; i < host.numel(); ++i)
      store_from_double(host.data(), host.dtype(), static_cast<size_t>(i),
                        static_cast<float>((2.0 * counter_uniform(key, static_cast<uint64_t>(i)) - 1.0) * bound));
    m.a.copy_from(host, &ctx.compute());
    m.b.fill_bytes(0, &ctx.compute());
    ctx.compute().synchronize();  // host is freed on return
    ad.modules.push_back(std::move(m));
  }
  ad.sync_compute_copies(ctx);
  ad.bind(c);
  return ad;
}

void merge_lora(Context& ctx, LlamaModel& model, const LoraAdapter& adapter) {
  const float scale = static_cast<float>(adapter.spec.scale());
  for (size_t l = 0; l < adapter.a.size(); ++l) {
    LayerWeights& L = model.mutable_weights().layers[l];
    for (int t = 0; t < kLoraTargets; ++t) {
      const Tensor& a = adapter.a[l][static_cast<size_t>(t)];
      if (!a.defined()) continue;
      model.make_dense(ctx, l, static_cast<Projection>(t));  // a quantized base: merged into its dequantized weight
      MatmulOptions o;  // (out, R) @ (R, in), added into W
      o.alpha = scale;
      o.beta = 1.0f;
      matmul(ctx, adapter.b[l][static_cast<size_t>(t)], a, L.*projection_weight(static_cast<Projection>(t)), o);
    }
  }
  ctx.synchronize();
}

void save_peft_adapter(const LoraAdapter& adapter, const ModelConfig& cfg, const std::string& dir,
                       const std::string& base_model) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::set<std::string> modules;
  for (const LoraModule& m : adapter.modules) {
    const std::string key = peft_module_key(m);
    tensors.emplace_back(key + ".lora_A.weight", m.a);
    tensors.emplace_back(key + ".lora_B.weight", m.b);
    modules.insert(short_name(m.name));
  }
  write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  const LoraSpec& s = adapter.spec;
  nlohmann::ordered_json layers = nullptr;
  if (!s.layers.empty()) layers = s.layers;
  const nlohmann::ordered_json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", s.rank},
      {"lora_alpha", s.alpha},
      {"lora_dropout", s.dropout},
      {"use_rslora", s.rslora},
      {"target_modules", std::vector<std::string>(modules.begin(), modules.end())},
      {"layers_to_transform", layers},
      {"layers_pattern", s.layers.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json("layers")},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"rank_pattern", nlohmann::ordered_json::object()},
      {"alpha_pattern", nlohmann::ordered_json::object()},
      {"use_dora", false},
      {"revision", nullptr},
      {"producer", "onn " + std::to_string(cfg.num_hidden_layers) + "-layer " + cfg.architecture}};
  write_file_atomic((fs::path(dir) / "adapter_config.json").string(), config.dump(2) + "\n");
}

LoraAdapter load_peft_adapter(Context& ctx, const LlamaModel& model, const std::string& dir) {
  return load_peft_adapter(ctx, model.config(), model.dtype(), dir);
}

LoraAdapter load_peft_adapter(Context& ctx, const ModelConfig& c, DType compute, const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string cfg_path = (fs::path(dir) / "adapter_config.json").string();
  const nlohmann::json doc = read_json_file(cfg_path, kMaxConfigFileBytes);
  const auto field = [&](const char* name) -> const nlohmann::json& {
    if (!doc.is_object() || !doc.contains(name)) throw FormatError(cfg_path + ": field \"" + name + "\" missing");
    return doc[name];
  };
  const auto bad = [&](const char* name, const std::string& why) {
    return FormatError(cfg_path + ": field \"" + name + "\" " + why);
  };
  if (field("peft_type") != "LORA") throw bad("peft_type", "must be \"LORA\" (only LoRA adapters are supported)");
  LoraSpec spec;
  if (!field("r").is_number_integer()) throw bad("r", "must be an integer");
  spec.rank = field("r").get<int64_t>();
  if (!field("lora_alpha").is_number()) throw bad("lora_alpha", "must be a number");
  spec.alpha = field("lora_alpha").get<double>();
  spec.dropout = doc.value("lora_dropout", 0.0);
  spec.rslora = doc.value("use_rslora", false);
  // PEFT features that change what the adapter computes beyond W + s B A.
  for (const char* f : {"use_dora", "lora_bias", "use_qalora", "fan_in_fan_out"})
    if (doc.contains(f) && !doc[f].is_null() && doc[f] != false) throw bad(f, "is set; only plain LoRA is supported");
  for (const char* f : {"modules_to_save", "trainable_token_indices", "target_parameters", "layer_replication"})
    if (doc.contains(f) && !doc[f].is_null() && !doc[f].empty())
      throw bad(f, "is set; adapters that train or add other modules are not supported");
  for (const char* f : {"rank_pattern", "alpha_pattern"})
    if (doc.contains(f) && !doc[f].is_null() && !doc[f].empty()) throw bad(f, "is set; per-module ranks are not supported");
  if (doc.contains("layers_to_transform") && !doc["layers_to_transform"].is_null()) {
    const nlohmann::json& l = doc["layers_to_transform"];
    if (l.is_number_integer()) {
      spec.layers = {l.get<int64_t>()};
    } else if (l.is_array()) {
      for (const auto& x : l) {
        if (!x.is_number_integer()) throw bad("layers_to_transform", "must hold integers");
        spec.layers.push_back(x.get<int64_t>());
      }
    } else {
      throw bad("layers_to_transform", "must be an integer or a list of integers");
    }
  }
  spec.targets.fill(false);
  const nlohmann::json& tm = field("target_modules");
  std::vector<std::string> names;
  if (tm.is_string()) {
    names.push_back(tm.get<std::string>());
  } else if (tm.is_array()) {
    for (const auto& x : tm) {
      if (!x.is_string()) throw bad("target_modules", "must hold strings");
      names.push_back(x.get<std::string>());
    }
  } else {
    throw bad("target_modules", "must be a list of module names");
  }
  for (const std::string& n : names) {
    const LoraTargets t = parse_lora_targets(n == "all-linear" ? n : n.substr(n.rfind('.') + 1));
    for (int i = 0; i < kLoraTargets; ++i) spec.targets[static_cast<size_t>(i)] |= t[static_cast<size_t>(i)];
  }
  try {
    check_lora_spec(c, spec);
  } catch (const InvalidArgument& e) {
    throw FormatError(cfg_path + ": " + e.what());
  }

  const std::string st_path = (fs::path(dir) / "adapter_model.safetensors").string();
  const SafetensorsFile st = SafetensorsFile::open(st_path);
  LoraAdapter ad;
  ad.spec = spec;
  std::set<std::string> used;
  for (LoraModule& m : new_modules(ctx, c, compute, spec)) {
    const std::string key = peft_module_key(m);
    for (auto [suffix, dst] : {std::pair<const char*, Tensor*>{".lora_A.weight", &m.a}, {".lora_B.weight", &m.b}}) {
      const std::string name = key + suffix;
      const TensorInfo* info = st.find(name);
      if (!info) throw FormatError(st_path + ": tensor \"" + name + "\" is missing");
      Tensor raw = st.tensor(name);
      if (!(raw.shape() == dst->shape()))
        throw FormatError(st_path + ": tensor \"" + name + "\" has shape " + raw.shape().str() + " but the model needs " +
                          dst->shape().str());
      if (!dtype_is_float(raw.dtype()))
        throw FormatError(st_path + ": tensor \"" + name + "\" has dtype " + std::string(dtype_name(raw.dtype())));
      dst->copy_from(raw.to_dtype(dst->dtype()), &ctx.compute());
      ctx.compute().synchronize();
      used.insert(name);
    }
    ad.modules.push_back(std::move(m));
  }
  for (const TensorInfo& t : st.tensors())
    if (!used.count(t.name))
      throw FormatError(st_path + ": tensor \"" + t.name + "\" does not belong to the adapter adapter_config.json describes");
  ad.sync_compute_copies(ctx);
  ad.bind(c);
  return ad;
}

namespace {

// The base tensor each adapted module folds into, checked: present, of B A's shape, float (a
// quantized weight by its logical shape).
std::map<std::string, const LoraModule*> merge_targets(const SafetensorsModel& base, const LoraAdapter& adapter,
                                                       const std::map<std::string, Shape>& quantized) {
  std::map<std::string, const LoraModule*> folds;
  for (const LoraModule& m : adapter.modules) {
    const std::string name = layer_prefix(m.layer) + m.name + ".weight";
    const SafetensorsModel::Entry* e = base.find(name);
    if (!e) throw FormatError(base.source() + ": tensor \"" + name + "\" that the adapter changes is missing");
    const std::vector<int64_t> want = {m.b.dim(0), m.a.dim(1)};
    const auto q = quantized.find(name);
    const std::vector<int64_t> has =
        q != quantized.end() ? std::vector<int64_t>(q->second.begin(), q->second.end()) : e->info->shape;
    if (has != want)
      throw FormatError(base.source() + ": tensor \"" + name + "\" has shape " + Shape(has.begin(), has.end()).str() +
                        " but the adapter's B A is " + Shape(want.begin(), want.end()).str());
    if (q == quantized.end() && !dtype_is_float(e->info->dtype))
      throw FormatError(base.source() + ": tensor \"" + name + "\" is not floating point");
    folds[name] = &m;
  }
  return folds;
}

// The merged folder's tensors: the base's, each quantized weight (a bitsandbytes 4-bit base)
// dense in the dtype its quant_state records, its extra entries dropped.
std::vector<TensorSpec> merged_specs(const SafetensorsModel& base, const std::map<std::string, Shape>& quantized) {
  std::vector<TensorSpec> specs;
  for (const auto& [name, e] : base.tensors()) {
    const auto q = quantized.find(name);
    if (q == quantized.end()) {
      if (!is_bnb_nf4_part(base, name)) specs.push_back({name, e.info->dtype, e.info->shape});
      continue;
    }
    DType original = DType::f32;
    (void)read_bnb_nf4(base, name, q->second, &original);  // checked before anything is written
    specs.push_back({name, original, std::vector<int64_t>(q->second.begin(), q->second.end())});
  }
  return specs;
}

}  // namespace

MergeResult merge_adapter_folder(const std::string& model_dir, const std::string& adapter_dir,
                                 const std::string& out_dir, uint64_t max_shard_bytes) {
  const ModelConfig cfg = load_model_config(model_dir);
  const SafetensorsModel base = SafetensorsModel::open(model_dir);
  Context ctx(Device::cpu());
  const LoraAdapter adapter = load_peft_adapter(ctx, cfg, DType::f32, adapter_dir);
  const float scale = static_cast<float>(adapter.spec.scale());
  std::map<std::string, Shape> quantized;
  for (const auto& [name, shape] : projection_weights(cfg))
    if (has_bnb_nf4(base, name)) quantized[name] = shape;
  const std::map<std::string, const LoraModule*> folds = merge_targets(base, adapter, quantized);
  const std::vector<TensorSpec> specs = merged_specs(base, quantized);
  MergeResult r;
  const TensorFill fill = [&](const TensorSpec& spec, std::span<uint8_t> bytes) {
    const auto it = folds.find(spec.name);
    const auto q = quantized.find(spec.name);
    Tensor t;
    if (q != quantized.end()) {
      t = Tensor::empty(q->second, DType::f32);
      dequantize(ctx, read_bnb_nf4(base, spec.name, q->second), t);
      t = t.to_dtype(spec.dtype);
    } else {
      t = base.tensor(spec.name);
    }
    if (it != folds.end()) {
      Tensor w = t.to_dtype(DType::f32);  // a fresh copy
      MatmulOptions o;  // W += scale * (out, R) @ (R, in)
      o.alpha = scale;
      o.beta = 1.0f;
      matmul(ctx, it->second->b, it->second->a, w, o);
      t = w.to_dtype(spec.dtype);
      ++r.merged;
    }
    ONN_ASSERT(t.nbytes() == bytes.size());
    std::memcpy(bytes.data(), t.data(), bytes.size());
    ++r.tensors;
  };
  write_folder_atomic(out_dir, {model_dir, adapter_dir}, "onn-merge", [&](const std::string& tmp) {
    r.files = write_sharded_safetensors(tmp, specs, fill, max_shard_bytes, {{"format", "pt"}, {"producer", "onn-merge"}});
    copy_model_side_files(model_dir, tmp);
    if (cfg.stored_quant == QuantFormat::none)
      std::filesystem::copy_file(std::filesystem::path(model_dir) / "config.json", std::filesystem::path(tmp) / "config.json");
    else  // the merged weights are dense: no quantization_config
      write_edited_config(model_dir, tmp, [](nlohmann::ordered_json& c) { c.erase("quantization_config"); });
  });
  return r;
}

}  // namespace onn
