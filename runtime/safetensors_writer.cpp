// The safetensors writer: validated entries, a header padded to 8-byte alignment, one
// atomic write per file; tensors come from memory or are streamed one at a time from a fill
// callback, optionally split into transformers-style shards.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"

namespace onn {

namespace {

// Tensors already in memory go to the file through a buffer of this size.
constexpr uint64_t kCopyChunkBytes = uint64_t{16} << 20;

uint64_t spec_bytes(const TensorSpec& t, const std::string& path) {
  uint64_t numel = 1;
  for (int64_t d : t.shape) {
    ONN_CHECK_ARG(d >= 0, path, ": tensor \"", t.name, "\" has a negative dim");
    ONN_CHECK_ARG(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel), path, ": tensor \"", t.name,
                  "\" is too large");
  }
  uint64_t bytes = 0;
  ONN_CHECK_ARG(!__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(t.dtype)), &bytes), path,
                ": tensor \"", t.name, "\" is too large");
  return bytes;
}

void sort_and_check(std::vector<TensorSpec>& specs, const std::string& path) {
  std::sort(specs.begin(), specs.end(), [](const TensorSpec& a, const TensorSpec& b) { return a.name < b.name; });
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& t = specs[i];
    ONN_CHECK_ARG(t.name != "__metadata__", path, ": \"__metadata__\" is reserved and cannot name a tensor");
    ONN_CHECK_ARG(find_invalid_utf8(t.name) == std::string::npos, path, ": tensor name is not valid UTF-8");
    ONN_CHECK_ARG(i == 0 || specs[i - 1].name != t.name, path, ": duplicate tensor name \"", t.name, "\"");
  }
}

// Writes already sorted and checked specs, each tensor's bytes produced in chunks of at most
// `chunk_bytes` (0: the largest tensor, so every tensor comes in one piece).
void write_file(const std::string& path, const std::vector<TensorSpec>& specs, const TensorChunkFill& fill,
                const std::map<std::string, std::string>& metadata, uint64_t chunk_bytes = 0) {
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
  uint64_t offset = 0, largest = 0;
  for (const TensorSpec& t : specs) {
    const uint64_t n = spec_bytes(t, path);
    nlohmann::ordered_json e;
    e["dtype"] = std::string(dtype_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + n};
    header[t.name] = std::move(e);
    offset += n;
    largest = std::max(largest, n);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  AtomicFile out(path);
  out.write(len, 8);
  out.write(text.data(), text.size());
  if (chunk_bytes == 0) chunk_bytes = largest;
  std::vector<uint8_t> buffer(static_cast<size_t>(std::min(largest, chunk_bytes)));
  for (const TensorSpec& t : specs) {
    const uint64_t n = spec_bytes(t, path);
    for (uint64_t at = 0; at < n; at += chunk_bytes) {
      std::span<uint8_t> bytes(buffer.data(), static_cast<size_t>(std::min(chunk_bytes, n - at)));
      fill(t, at, bytes);
      out.write(bytes);
    }
  }
  out.commit();
}

// A whole-tensor fill as a chunk fill (write_file then asks for each tensor in one piece).
TensorChunkFill whole(const TensorFill& fill) {
  return [&fill](const TensorSpec& t, uint64_t, std::span<uint8_t> out) { fill(t, out); };
}

}  // namespace

void write_safetensors_streamed(const std::string& path, std::vector<TensorSpec> specs, const TensorFill& fill,
                                const std::map<std::string, std::string>& metadata) {
  sort_and_check(specs, path);
  write_file(path, specs, whole(fill), metadata);
}

void write_safetensors_chunked(const std::string& path, std::vector<TensorSpec> specs, const TensorChunkFill& fill,
                               uint64_t chunk_bytes, const std::map<std::string, std::string>& metadata) {
  ONN_CHECK_ARG(chunk_bytes > 0, path, ": the chunk size must be positive");
  sort_and_check(specs, path);
  write_file(path, specs, fill, metadata, chunk_bytes);
}

std::vector<std::string> write_sharded_safetensors(const std::string& dir, std::vector<TensorSpec> specs,
                                                   const TensorFill& fill, uint64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata) {
  namespace fs = std::filesystem;
  ONN_CHECK_ARG(max_shard_bytes > 0, dir, ": the shard size must be positive");
  sort_and_check(specs, dir);
  // Greedy in name order, as transformers' save_pretrained: a tensor larger than the limit
  // gets a shard of its own.
  std::vector<std::vector<TensorSpec>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (TensorSpec& t : specs) {
    const uint64_t n = spec_bytes(t, dir);
    if (!shards.back().empty() && in_shard + n > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    in_shard += n;
    total += n;
    shards.back().push_back(std::move(t));
  }
  fs::create_directories(dir);
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> names;
  if (shards.size() == 1) {
    names.push_back("model.safetensors");
    write_file((fs::path(dir) / names[0]).string(), shards[0], whole(fill), metadata);
    fs::remove(index_path);
  } else {
    nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      names.emplace_back(name);
      write_file((fs::path(dir) / name).string(), shards[s], whole(fill), metadata);
      for (const TensorSpec& t : shards[s]) weight_map[t.name] = names.back();
    }
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    meta["total_size"] = total;
    const std::string text = nlohmann::ordered_json{{"metadata", meta}, {"weight_map", weight_map}}.dump(2) + "\n";
    AtomicFile index(index_path.string());
    index.write(text.data(), text.size());
    index.commit();
    fs::remove(fs::path(dir) / "model.safetensors");
  }
  // Shards of an earlier, differently split write would otherwise linger.
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.starts_with("model-") && n.ends_with(".safetensors") && std::find(names.begin(), names.end(), n) == names.end())
      fs::remove(e.path());
  }
  return names;
}

void write_safetensors(const std::string& path, std::vector<TensorBytes> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  std::map<std::string, const TensorBytes*> by_name;
  for (const TensorBytes& t : tensors) {
    specs.push_back(TensorSpec{t.name, t.dtype, t.shape});
    const uint64_t need = spec_bytes(specs.back(), path);
    ONN_CHECK_ARG(need == t.nbytes, path, ": tensor \"", t.name, "\" has ", t.nbytes,
                  " bytes but its shape and dtype need ", need);
    ONN_CHECK_ARG(t.nbytes == 0 || t.data != nullptr, path, ": tensor \"", t.name, "\" has no data");
    by_name.emplace(t.name, &t);
  }
  sort_and_check(specs, path);
  write_file(
      path, specs,
      [&](const TensorSpec& s, uint64_t at, std::span<uint8_t> out) {
        std::memcpy(out.data(), static_cast<const uint8_t*>(by_name.at(s.name)->data) + at, out.size());
      },
      metadata, kCopyChunkBytes);
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
