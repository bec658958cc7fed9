// The safetensors writer: validated entries, a header padded to 8-byte alignment, one
// atomic write.
#include <algorithm>
#include <cstring>
#include <set>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"

namespace onn {

void write_safetensors(const std::string& path, std::vector<TensorBytes> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorBytes& a, const TensorBytes& b) { return a.name < b.name; });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) {
      ONN_CHECK_ARG(find_invalid_utf8(k) == std::string::npos && find_invalid_utf8(v) == std::string::npos,
                    path, ": metadata must be valid UTF-8");
      m[k] = v;
    }
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorBytes& t = tensors[i];
    ONN_CHECK_ARG(t.name != "__metadata__", path, ": \"__metadata__\" is reserved and cannot name a tensor");
    ONN_CHECK_ARG(find_invalid_utf8(t.name) == std::string::npos, path, ": tensor name is not valid UTF-8");
    ONN_CHECK_ARG(i == 0 || tensors[i - 1].name != t.name, path, ": duplicate tensor name \"", t.name, "\"");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      ONN_CHECK_ARG(d >= 0, path, ": tensor \"", t.name, "\" has a negative dim");
      ONN_CHECK_ARG(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel), path, ": tensor \"", t.name,
                    "\" is too large");
    }
    ONN_CHECK_ARG(numel * dtype_size(t.dtype) == t.nbytes, path, ": tensor \"", t.name, "\" has ", t.nbytes,
                  " bytes but its shape and dtype need ", numel * dtype_size(t.dtype));
    ONN_CHECK_ARG(t.nbytes == 0 || t.data != nullptr, path, ": tensor \"", t.name, "\" has no data");
    nlohmann::ordered_json e;
    e["dtype"] = std::string(dtype_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + t.nbytes};
    header[t.name] = std::move(e);
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  AtomicFile out(path);
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (const TensorBytes& t : tensors) {
    if (t.nbytes) out.write(t.data, static_cast<size_t>(t.nbytes));
  }
  out.commit();
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  std::vector<TensorBytes> raw;
  for (const auto& [name, t] : tensors) {
    ONN_CHECK_ARG(t.defined(), path, ": tensor \"", name, "\" is undefined");
    host.push_back(t.device().is_cpu() ? t : t.to(Device::cpu()));
    const Tensor& h = host.back();
    raw.push_back(TensorBytes{name, h.dtype(), std::vector<int64_t>(h.shape().begin(), h.shape().end()),
                              h.nbytes() ? h.data() : nullptr, h.nbytes()});
  }
  write_safetensors(path, std::move(raw), metadata);
}

}  // namespace onn
