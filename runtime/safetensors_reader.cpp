// The safetensors reader. Every defect a hostile file can carry is refused here, before any
// tensor is handed out: the size fields, the JSON, each entry, and the byte layout as a
// whole (offsets must tile the data section exactly, in order, with no gaps or overlaps).
#include <algorithm>
#include <cstring>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"
#include "runtime/stream.h"

namespace onn {

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // overflow excluded by the parser
  return n;
}

namespace {

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(source + ": " + what);
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s.substr(0, 200)) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '"' || c == '\\') {
      out += '?';
    } else {
      out += c;
    }
  }
  if (s.size() > 200) out += "...";
  return out + "\"";
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t json_offset(const nlohmann::json& v, const std::string& source, const std::string& where) {
  if (!v.is_number_unsigned()) fail(source, where + " is not a non-negative integer");
  return v.get<uint64_t>();
}

TensorInfo parse_entry(const std::string& name, const nlohmann::json& e, const std::string& source) {
  const std::string where = "tensor " + quoted(name);
  if (!e.is_object()) fail(source, where + ": entry is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!e.contains(field)) fail(source, where + ": missing \"" + field + "\"");
  }
  TensorInfo t;
  t.name = name;
  const auto& dt = e.at("dtype");
  if (!dt.is_string()) fail(source, where + ": \"dtype\" is not a string");
  const auto d = dtype_from_name(dt.get_ref<const std::string&>());
  if (!d) {
    fail(source, where + ": unknown or unsupported dtype " + quoted(dt.get_ref<const std::string&>()) +
                     " (supported: F32, F16, BF16, F64, I8, U8, I32, I64, BOOL)");
  }
  t.dtype = *d;

  const auto& sh = e.at("shape");
  if (!sh.is_array()) fail(source, where + ": \"shape\" is not an array");
  if (sh.size() > static_cast<size_t>(kSafetensorsMaxRank)) {
    fail(source, where + ": shape has " + std::to_string(sh.size()) + " dims (at most " +
                     std::to_string(kSafetensorsMaxRank) + ")");
  }
  uint64_t numel = 1;
  for (size_t i = 0; i < sh.size(); ++i) {
    const auto& x = sh[i];
    const std::string at = where + ": shape[" + std::to_string(i) + "]";
    if (x.is_number_integer() && !x.is_number_unsigned()) fail(source, at + " is negative");
    if (!x.is_number_unsigned()) fail(source, at + " is not an integer");
    const uint64_t v = x.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, v, &numel) ||
        numel > static_cast<uint64_t>(INT64_MAX)) {
      fail(source, where + ": shape element count overflows");
    }
    t.shape.push_back(static_cast<int64_t>(v));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(t.dtype)), &nbytes)) {
    fail(source, where + ": shape byte size overflows");
  }

  const auto& off = e.at("data_offsets");
  if (!off.is_array() || off.size() != 2) fail(source, where + ": \"data_offsets\" is not an array of two integers");
  t.begin = json_offset(off[0], source, where + ": data_offsets[0]");
  t.end = json_offset(off[1], source, where + ": data_offsets[1]");
  if (t.end < t.begin) {
    fail(source, where + ": data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                     "] are reversed");
  }
  if (t.end - t.begin != nbytes) {
    fail(source, where + ": shape and dtype give " + std::to_string(nbytes) + " bytes but data_offsets span " +
                     std::to_string(t.end - t.begin));
  }
  return t;
}

}  // namespace

SafetensorsHeader parse_safetensors(std::span<const uint8_t> file, const std::string& source) {
  const uint64_t size = file.size();
  if (size < 8) fail(source, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  const uint64_t n = read_u64_le(file.data());
  if (n > kSafetensorsMaxHeader) {
    fail(source, "header length " + std::to_string(n) + " is over the " + std::to_string(kSafetensorsMaxHeader) +
                     "-byte limit");
  }
  if (n > size - 8) {
    fail(source, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) +
                     " bytes)");
  }
  const std::string_view text(reinterpret_cast<const char*>(file.data() + 8), static_cast<size_t>(n));
  const nlohmann::json root = parse_json_strict(text, source + ": header", kSafetensorsMaxDepth);
  if (!root.is_object()) fail(source, "header is not a JSON object");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(source, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) fail(source, "__metadata__ value for " + quoted(mk) + " is not a string");
        h.metadata.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    h.tensors.push_back(parse_entry(key, value, source));
  }

  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const TensorInfo& t : h.tensors) {
    if (t.begin < expected) {
      fail(source, "tensor " + quoted(t.name) + " at data offset " + std::to_string(t.begin) +
                       " overlaps the previous tensor (which ends at " + std::to_string(expected) + ")");
    }
    if (t.begin > expected && expected == 0) {
      fail(source, "data does not start at offset 0: the first tensor, " + quoted(t.name) + ", starts at " +
                       std::to_string(t.begin));
    }
    if (t.begin > expected) {
      fail(source, "gap in the data: bytes " + std::to_string(expected) + ".." + std::to_string(t.begin) +
                       " before tensor " + quoted(t.name) + " belong to no tensor");
    }
    expected = t.end;
  }
  if (expected > data_size) {
    fail(source, "tensor data ends at byte " + std::to_string(expected) + " of the data section, past its end (" +
                     std::to_string(data_size) + " bytes)");
  }
  if (expected < data_size) {
    fail(source, std::to_string(data_size - expected) + " trailing bytes after the last tensor");
  }
  return h;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto map = MappedFile::open(path);
  SafetensorsFile f;
  f.path_ = path;
  f.data_ = map->data();
  f.size_ = map->size();
  f.owner_ = map;
  f.map_ = map;
  f.parse();
  return f;
}

void SafetensorsFile::release(const TensorInfo& t) const {
  if (map_)
    map_->release(static_cast<size_t>(header_.data_start + t.begin), static_cast<size_t>(header_.data_start + t.end));
}

SafetensorsFile SafetensorsFile::from_bytes(std::string name, std::vector<uint8_t> bytes) {
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  SafetensorsFile f;
  f.path_ = std::move(name);
  f.data_ = owned->data();
  f.size_ = owned->size();
  f.owner_ = owned;
  f.parse();
  return f;
}

void SafetensorsFile::parse() {
  header_ = parse_safetensors({data_, static_cast<size_t>(size_)}, path_);
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) throw InvalidArgument(path_ + ": no tensor named " + quoted(name));
  return *t;
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& t) const {
  return {data_ + header_.data_start + t.begin, static_cast<size_t>(t.nbytes())};
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& t = info(name);
  ONN_CHECK_ARG(t.shape.size() <= static_cast<size_t>(kMaxDims), path_, ": tensor ", quoted(name), " has ",
                t.shape.size(), " dims; ONN tensors have at most ", kMaxDims);
  const Shape shape(t.shape.begin(), t.shape.end());
  const auto b = bytes(t);
  if (reinterpret_cast<uintptr_t>(b.data()) % dtype_size(t.dtype) == 0) {
    return Tensor::wrap(const_cast<uint8_t*>(b.data()), shape, t.dtype, owner_);
  }
  Tensor out = Tensor::empty(shape, t.dtype);
  if (!b.empty()) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

Tensor SafetensorsFile::load(const std::string& name, Device device, Stream* stream) const {
  const Tensor host = tensor(name);
  Tensor out = Tensor::empty(host.shape(), host.dtype(), device);
  out.copy_from(host, stream);
  if (stream != nullptr) stream->synchronize();  // the host view may be unaligned copy
  return out;
}

}  // namespace onn
