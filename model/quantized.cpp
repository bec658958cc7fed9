// bitsandbytes' 4-bit layout in safetensors (model/quantized.h): read with every part checked,
// and written back the same way.
#include "model/quantized.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/llama.h"
#include "runtime/error.h"
#include "runtime/file_util.h"

namespace onn {

namespace {

class Nf4Reader {
 public:
  Nf4Reader(const SafetensorsModel& st, const std::string& name) : st_(st), name_(name) {}

  [[noreturn]] void fail(const std::string& why) const {
    throw FormatError(st_.source() + ": tensor \"" + name_ + "\" (bitsandbytes nf4): " + why);
  }
  Tensor part(const std::string& suffix) const {
    if (!st_.find(name_ + suffix)) fail("\"" + name_ + suffix + "\" is missing");
    return st_.tensor(name_ + suffix);
  }
  nlohmann::json state() const {
    const Tensor t = part(kBnbNf4StateSuffix);
    if (t.dtype() != DType::u8) fail("its quant_state must be U8 bytes, got " + std::string(dtype_name(t.dtype())));
    if (t.nbytes() > kMaxQuantStateBytes)
      fail("its quant_state holds " + std::to_string(t.nbytes()) + " bytes, more than " +
           std::to_string(kMaxQuantStateBytes));
    const auto* p = static_cast<const char*>(t.data());
    nlohmann::json j = nlohmann::json::parse(p, p + t.nbytes(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail("its quant_state is not a JSON object");
    return j;
  }
  template <typename T>
  T field(const nlohmann::json& j, const char* key) const {
    const auto it = j.find(key);
    if (it == j.end()) fail(std::string("quant_state has no \"") + key + "\"");
    try {
      return it->get<T>();
    } catch (const nlohmann::json::exception&) {
      fail(std::string("quant_state \"") + key + "\" has the wrong type: " + it->dump());
    }
  }

 private:
  const SafetensorsModel& st_;
  const std::string& name_;
};

}  // namespace

bool has_bnb_nf4(const SafetensorsModel& st, const std::string& name) { return st.find(name + ".absmax") != nullptr; }

bool is_bnb_nf4_part(const SafetensorsModel& st, const std::string& name) {
  for (const char* suffix : {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", kBnbNf4StateSuffix}) {
    const size_t n = std::strlen(suffix);
    if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0 && has_bnb_nf4(st, name.substr(0, name.size() - n)))
      return true;
  }
  return false;
}

std::vector<Nf4Weight> bnb_nf4_weights(const SafetensorsModel& st) {
  std::vector<Nf4Weight> out;
  for (const auto& [name, e] : st.tensors()) {
    if (!has_bnb_nf4(st, name)) continue;
    const Nf4Reader r(st, name);
    const std::vector<int64_t> dims = r.field<std::vector<int64_t>>(r.state(), "shape");
    if (dims.size() != 2 || dims[0] < 1 || dims[1] < 1 || dims[0] > (int64_t{1} << 31) || dims[1] > (int64_t{1} << 31))
      r.fail("quant_state shape " + nlohmann::json(dims).dump() + " is not a 2-D weight");
    Nf4Weight w{name, Shape{dims[0], dims[1]}, 0};
    for (const Tensor& t : read_bnb_nf4(st, name, w.shape).parts()) w.bytes += t.nbytes();
    w.bytes += st.find(name + kBnbNf4StateSuffix)->info->nbytes();
    out.push_back(std::move(w));
  }
  return out;
}

namespace {

constexpr float kFloatMax = 3.0e38f;

// The quant_state's description of the weight: nf4, 64-blocks, the shape config.json implies.
void check_state(const Nf4Reader& r, const nlohmann::json& j, const Shape& shape) {
  const std::string type = r.field<std::string>(j, "quant_type");
  if (type != "nf4") r.fail("quant_type \"" + type + "\" is not implemented (ONN reads nf4)");
  const int64_t block = r.field<int64_t>(j, "blocksize");
  if (block != kNf4Block) r.fail("blocksize " + std::to_string(block) + " is not implemented (ONN reads 64)");
  const std::vector<int64_t> dims = r.field<std::vector<int64_t>>(j, "shape");
  if (!(Shape(dims.begin(), dims.end()) == shape))
    r.fail("quant_state shape " + nlohmann::json(dims).dump() + " but config.json implies " + shape.str());
}

// Double quantization's entries and offset, when the quant_state has them.
void read_nested(const Nf4Reader& r, const nlohmann::json& j, bool has_nested_absmax, QuantTensor& q) {
  if (!j.contains("nested_offset") && !j.contains("nested_blocksize")) {
    if (has_nested_absmax) r.fail("it has nested_absmax but its quant_state has no nested_offset");
    return;
  }
  const int64_t nb = r.field<int64_t>(j, "nested_blocksize");
  if (nb != kNf4NestedBlock) r.fail("nested_blocksize " + std::to_string(nb) + " is not implemented (ONN reads 256)");
  const std::string nd = r.field<std::string>(j, "nested_dtype");
  if (nd != "float32") r.fail("nested_dtype \"" + nd + "\" is not implemented (ONN reads float32)");
  const double offset = r.field<double>(j, "nested_offset");
  if (!std::isfinite(offset) || std::fabs(offset) > kFloatMax) r.fail("nested_offset is not a finite float");
  q.nested_offset = static_cast<float>(offset);
  q.nested_absmax = r.part(".nested_absmax");
  q.nested_code = r.part(".nested_quant_map");
}

// Every F32 value of t finite and within +-limit.
void check_scales(const Nf4Reader& r, const Tensor& t, const char* part, float limit) {
  if (!t.defined() || t.dtype() != DType::f32) return;
  const float* v = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(v[i]) || std::fabs(v[i]) > limit)
      r.fail(std::string(part) + "[" + std::to_string(i) + "] = " + std::to_string(v[i]) + " is not a finite scale");
}

}  // namespace

QuantTensor read_bnb_nf4(const SafetensorsModel& st, const std::string& name, const Shape& shape, DType* original) {
  const Nf4Reader r(st, name);
  const nlohmann::json j = r.state();
  if (original) {
    const std::string dt = j.contains("dtype") ? r.field<std::string>(j, "dtype") : "float32";
    *original = dtype_from_torch_name(dt).value_or(DType::f32);
  }
  check_state(r, j, shape);
  QuantTensor q;
  q.format = QuantFormat::nf4;
  q.rows = q.stored_rows = shape[0];
  q.cols = shape[1];
  q.data = r.part("");
  q.absmax = r.part(".absmax");
  q.code = r.part(".quant_map");
  read_nested(r, j, st.find(name + ".nested_absmax") != nullptr, q);
  // The packed weight's own shape is bitsandbytes' ((numel + 1) / 2, 1); its element count is
  // what must agree.
  if (q.data.defined() && q.data.dtype() == DType::u8) q.data = q.data.reshape(Shape{q.data.numel()});
  const std::string layout = quant_layout_error(q);
  if (!layout.empty()) r.fail(layout);
  check_scales(r, q.absmax, "absmax", kFloatMax);
  check_scales(r, q.nested_absmax, "nested_absmax", kFloatMax);
  check_scales(r, q.nested_code, "nested_quant_map", 1.0f);
  return q;
}

std::string bnb_nf4_state_json(const QuantTensor& q, DType dtype) {
  // Python's json.dumps: ", " and ": " separators, insertion order, repr of floats.
  std::string s = "{\"quant_type\": \"nf4\", \"blocksize\": " + std::to_string(kNf4Block) + ", \"dtype\": \"" +
                  std::string(torch_dtype_name(dtype)) + "\", \"shape\": [" + std::to_string(q.rows) + ", " + std::to_string(q.cols) + "]";
  if (q.double_quant()) {
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, static_cast<double>(q.nested_offset));
    std::string num(buf, res.ptr);
    if (num.find_first_of(".en") == std::string::npos) num += ".0";
    s += ", \"nested_blocksize\": " + std::to_string(kNf4NestedBlock) +
         ", \"nested_dtype\": \"float32\", \"nested_offset\": " + num;
  }
  return s + "}";
}

std::vector<std::pair<std::string, Tensor>> bnb_nf4_entries(const std::string& name, const QuantTensor& q,
                                                            DType dtype) {
  ONN_CHECK_ARG(q.format == QuantFormat::nf4 && q.row0 == 0 && q.rows == q.stored_rows,
                "bitsandbytes layout: ", name, " is not a whole nf4 weight");
  std::vector<std::pair<std::string, Tensor>> out = {{name, q.data.reshape(Shape{q.data.numel(), 1})},
                                                     {name + ".absmax", q.absmax},
                                                     {name + ".quant_map", q.code}};
  if (q.double_quant()) {
    out.emplace_back(name + ".nested_absmax", q.nested_absmax);
    out.emplace_back(name + ".nested_quant_map", q.nested_code);
  }
  const std::string js = bnb_nf4_state_json(q, dtype);
  Tensor state = Tensor::empty(Shape{static_cast<int64_t>(js.size())}, DType::u8);
  std::memcpy(state.data(), js.data(), js.size());
  out.emplace_back(name + kBnbNf4StateSuffix, state);
  return out;
}

namespace {

// The entries one (rows, cols) nf4 weight becomes, shapes and dtypes only (the header).
std::vector<TensorSpec> nf4_specs(const std::string& name, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols, blocks = nf4_blocks(n), nested = (blocks + kNf4NestedBlock - 1) / kNf4NestedBlock;
  return {{name, DType::u8, {(n + 1) / 2, 1}},
          {name + ".absmax", DType::u8, {blocks}},
          {name + ".quant_map", DType::f32, {kNf4Codes}},
          {name + ".nested_absmax", DType::f32, {nested}},
          {name + ".nested_quant_map", DType::f32, {kDynamicCodes}},
          {name + kBnbNf4StateSuffix, DType::u8, {static_cast<int64_t>(kQuantStateFileBytes)}}};
}

nlohmann::ordered_json bnb_quantization_config(DType compute) {
  return {{"_load_in_4bit", true},          {"_load_in_8bit", false},
          {"bnb_4bit_compute_dtype", torch_dtype_name(compute)},   {"bnb_4bit_quant_storage", "uint8"},
          {"bnb_4bit_quant_type", "nf4"},   {"bnb_4bit_use_double_quant", true},
          {"llm_int8_enable_fp32_cpu_offload", false}, {"llm_int8_has_fp16_weight", false},
          {"llm_int8_skip_modules", nullptr}, {"llm_int8_threshold", 6.0},
          {"load_in_4bit", true},           {"load_in_8bit", false},
          {"quant_method", "bitsandbytes"}};
}

// The folder's tensors as onn-quantize writes them (each projection weight as its nf4 entries),
// and which weight each entry belongs to.
struct Nf4Folder {
  std::vector<TensorSpec> specs;
  std::map<std::string, std::string> part_of;  // entry -> the weight
};

Nf4Folder plan_nf4_folder(const ModelConfig& cfg, const SafetensorsModel& base) {
  const std::map<std::string, Shape> weights = projection_weights(cfg);
  Nf4Folder f;
  for (const auto& [name, e] : base.tensors()) {
    const auto w = weights.find(name);
    if (w == weights.end()) {
      f.specs.push_back({name, e.info->dtype, e.info->shape});
      continue;
    }
    if (!(Shape(e.info->shape.begin(), e.info->shape.end()) == w->second) || !dtype_is_float(e.info->dtype))
      throw FormatError(base.source() + ": tensor \"" + name + "\" is not a float tensor of shape " + w->second.str());
    for (const TensorSpec& p : nf4_specs(name, w->second[0], w->second[1])) {
      f.part_of[p.name] = name;
      f.specs.push_back(p);
    }
  }
  return f;
}

// Fills the entries in name order, quantizing each weight when its first entry is asked for
// (its entries are consecutive): one dense and one quantized weight in memory at a time.
class Nf4Filler {
 public:
  Nf4Filler(const SafetensorsModel& base, const Nf4Folder& folder, QuantizeResult& r)
      : base_(base), folder_(folder), r_(r) {}

  void operator()(const TensorSpec& spec, std::span<uint8_t> bytes) {
    const auto p = folder_.part_of.find(spec.name);
    const Tensor t = p == folder_.part_of.end() ? base_.tensor(spec.name) : entry(p->second, spec.name);
    const bool state = p != folder_.part_of.end() && spec.name == p->second + kBnbNf4StateSuffix;
    ONN_ASSERT(state ? t.nbytes() <= bytes.size() : t.nbytes() == bytes.size());
    std::memcpy(bytes.data(), t.data(), t.nbytes());
    std::memset(bytes.data() + t.nbytes(), ' ', bytes.size() - t.nbytes());  // the JSON's padding
    ++r_.tensors;
    r_.bytes_out += bytes.size();
  }

 private:
  const Tensor& entry(const std::string& weight, const std::string& name) {
    if (weight_ != weight) {
      entries_.clear();
      weight_ = weight;
      const Tensor dense = base_.tensor(weight);
      const QuantTensor q = quantize(dense, QuantFormat::nf4, true, cpu_allocator());
      for (auto& [n, x] : bnb_nf4_entries(weight, q, dense.dtype())) entries_[n] = x;
      ++r_.quantized;
    }
    return entries_.at(name);
  }

  const SafetensorsModel& base_;
  const Nf4Folder& folder_;
  QuantizeResult& r_;
  std::string weight_;
  std::map<std::string, Tensor> entries_;
};

}  // namespace

QuantizeResult quantize_folder(const std::string& model_dir, const std::string& out_dir, QuantFormat format,
                               uint64_t max_shard_bytes) {
  ONN_CHECK_ARG(format == QuantFormat::nf4, "onn-quantize writes nf4 (bitsandbytes 4-bit) folders; ",
                quant_format_name(format), " is applied while loading instead (--quantize ",
                quant_format_name(format), " on onn-train, onn-generate, onn-eval, onn-bench)");
  const ModelConfig cfg = load_model_config(model_dir);
  ONN_CHECK_ARG(cfg.stored_quant == QuantFormat::none, model_dir, " is already quantized (",
                quant_format_name(cfg.stored_quant), ")");
  const SafetensorsModel base = SafetensorsModel::open(model_dir);
  const Nf4Folder folder = plan_nf4_folder(cfg, base);
  QuantizeResult r;
  for (const auto& [name, e] : base.tensors()) r.bytes_in += e.info->nbytes();
  write_folder_atomic(out_dir, {model_dir}, "onn-quantize", [&](const std::string& tmp) {
    r.files = write_sharded_safetensors(tmp, folder.specs, Nf4Filler(base, folder, r), max_shard_bytes,
                                        {{"format", "pt"}, {"producer", "onn-quantize"}});
    copy_model_side_files(model_dir, tmp);
    write_edited_config(model_dir, tmp, [&](nlohmann::ordered_json& c) {
      c["quantization_config"] = bnb_quantization_config(cfg.torch_dtype);
    });
  });
  return r;
}

}  // namespace onn
