// bitsandbytes' 4-bit layout in safetensors (model/quantized.h): read with every part checked,
// and written back the same way.
#include "model/quantized.h"

#include <charconv>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace onn {

namespace {

class Nf4Reader {
 public:
  Nf4Reader(const SafetensorsModel& st, const std::string& name) : st_(st), name_(name) {}

  [[noreturn]] void fail(const std::string& why) const {
    throw FormatError(st_.source() + ": tensor \"" + name_ + "\" (bitsandbytes nf4): " + why);
  }
  Tensor part(const std::string& suffix, bool required = true) const {
    if (!st_.find(name_ + suffix)) {
      if (required) fail("\"" + name_ + suffix + "\" is missing");
      return Tensor();
    }
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

QuantTensor read_bnb_nf4(const SafetensorsModel& st, const std::string& name, const Shape& shape) {
  const Nf4Reader r(st, name);
  const nlohmann::json j = r.state();
  const std::string type = r.field<std::string>(j, "quant_type");
  if (type != "nf4") r.fail("quant_type \"" + type + "\" is not implemented (ONN reads nf4)");
  const int64_t block = r.field<int64_t>(j, "blocksize");
  if (block != kNf4Block) r.fail("blocksize " + std::to_string(block) + " is not implemented (ONN reads 64)");
  const std::vector<int64_t> dims = r.field<std::vector<int64_t>>(j, "shape");
  if (!(Shape(dims.begin(), dims.end()) == shape))
    r.fail("quant_state shape " + nlohmann::json(dims).dump() + " but config.json implies " + shape.str());
  QuantTensor q;
  q.format = QuantFormat::nf4;
  q.rows = q.stored_rows = shape[0];
  q.cols = shape[1];
  q.data = r.part("");
  q.absmax = r.part(".absmax");
  q.code = r.part(".quant_map");
  const bool nested = j.contains("nested_offset") || j.contains("nested_blocksize");
  if (nested) {
    const int64_t nb = r.field<int64_t>(j, "nested_blocksize");
    if (nb != kNf4NestedBlock) r.fail("nested_blocksize " + std::to_string(nb) + " is not implemented (ONN reads 256)");
    const std::string nd = r.field<std::string>(j, "nested_dtype");
    if (nd != "float32") r.fail("nested_dtype \"" + nd + "\" is not implemented (ONN reads float32)");
    const double offset = r.field<double>(j, "nested_offset");
    if (!std::isfinite(offset) || std::fabs(offset) > 3.0e38) r.fail("nested_offset is not a finite float");
    q.nested_offset = static_cast<float>(offset);
    q.nested_absmax = r.part(".nested_absmax");
    q.nested_code = r.part(".nested_quant_map");
  } else if (st.find(name + ".nested_absmax")) {
    r.fail("it has nested_absmax but its quant_state has no nested_offset");
  }
  // The packed weight's own shape is bitsandbytes' ((numel + 1) / 2, 1); its element count is
  // what must agree.
  if (q.data.defined() && q.data.dtype() == DType::u8) q.data = q.data.reshape(Shape{q.data.numel()});
  const std::string layout = quant_layout_error(q);
  if (!layout.empty()) r.fail(layout);
  const auto finite_scales = [&](const Tensor& t, const char* part, float limit) {
    if (!t.defined() || t.dtype() != DType::f32) return;
    const float* v = t.data_as<float>();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(v[i]) || std::fabs(v[i]) > limit)
        r.fail(std::string(part) + "[" + std::to_string(i) + "] = " + std::to_string(v[i]) + " is not a finite scale");
  };
  constexpr float kAny = 3.0e38f;
  finite_scales(q.absmax, "absmax", kAny);
  finite_scales(q.nested_absmax, "nested_absmax", kAny);
  finite_scales(q.nested_code, "nested_quant_map", 1.0f);
  return q;
}

std::string bnb_nf4_state_json(const QuantTensor& q, DType dtype) {
  const auto dtype_str = [](DType t) -> std::string {
    switch (t) {
      case DType::bf16: return "bfloat16";
      case DType::f16: return "float16";
      default: return "float32";
    }
  };
  // Python's json.dumps: ", " and ": " separators, insertion order, repr of floats.
  std::string s = "{\"quant_type\": \"nf4\", \"blocksize\": " + std::to_string(kNf4Block) + ", \"dtype\": \"" +
                  dtype_str(dtype) + "\", \"shape\": [" + std::to_string(q.rows) + ", " + std::to_string(q.cols) + "]";
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

}  // namespace onn
