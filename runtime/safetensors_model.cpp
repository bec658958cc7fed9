// Model folders: a single safetensors file or a sharded index. Shard names come from an
// untrusted index, so each must resolve to a regular file inside the model folder.
#include <filesystem>

#include "runtime/error.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"

namespace fs = std::filesystem;

namespace onn {

namespace {

// Refuses absolute names, ".." components, and names that resolve (through symlinks)
// outside the folder.
fs::path checked_shard_path(const fs::path& dir, const std::string& shard, const std::string& index_path) {
  auto bad = [&](const std::string& why) -> fs::path {
    throw FormatError(index_path + ": shard \"" + shard + "\" " + why);
  };
  if (shard.empty()) return bad("is an empty name");
  if (shard.find('\0') != std::string::npos) return bad("contains a NUL byte");
  const fs::path p(shard);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return bad("is an absolute path");
  for (const auto& part : p) {
    if (part == "..") return bad("contains \"..\"");
  }
  std::error_code ec;
  const fs::path root = fs::canonical(dir, ec);
  if (ec) return bad("cannot be resolved: " + ec.message());
  const fs::path full = fs::weakly_canonical(root / p, ec);
  if (ec) return bad("cannot be resolved: " + ec.message());
  const auto rel = full.lexically_relative(root);
  if (rel.empty() || *rel.begin() == "..") return bad("resolves outside the model folder");
  if (!fs::is_regular_file(full, ec)) return bad("does not exist or is not a regular file");
  return full;
}

}  // namespace

SafetensorsModel SafetensorsModel::open(const std::string& path) {
  SafetensorsModel m;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw IoError(path + ": no such file or folder");
  if (!fs::is_directory(path, ec)) {
    m.source_ = path;
    m.files_.push_back(SafetensorsFile::open(path));
  } else {
    const fs::path dir(path);
    const fs::path index = dir / "model.safetensors.index.json";
    if (fs::exists(index, ec)) {
      m.source_ = index.string();
      const nlohmann::json root = read_json_file(m.source_, size_t{64} << 20, 16);
      if (!root.is_object()) throw FormatError(m.source_ + ": not a JSON object");
      if (!root.contains("weight_map") || !root["weight_map"].is_object()) {
        throw FormatError(m.source_ + ": missing \"weight_map\" object");
      }
      if (root.contains("metadata")) {
        if (!root["metadata"].is_object()) throw FormatError(m.source_ + ": \"metadata\" is not an object");
        for (const auto& [k, v] : root["metadata"].items()) {
          m.metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
        }
      }
      std::map<std::string, size_t> shard_index;
      std::vector<std::pair<std::string, size_t>> pending;
      for (const auto& [name, shard] : root["weight_map"].items()) {
        if (!shard.is_string()) throw FormatError(m.source_ + ": weight_map entry \"" + name + "\" is not a string");
        const std::string& s = shard.get_ref<const std::string&>();
        auto it = shard_index.find(s);
        if (it == shard_index.end()) {
          const fs::path full = checked_shard_path(dir, s, m.source_);
          m.files_.push_back(SafetensorsFile::open(full.string()));
          it = shard_index.emplace(s, m.files_.size() - 1).first;
        }
        pending.emplace_back(name, it->second);
      }
      // Resolved only now: files_ may have moved while it grew.
      for (const auto& [name, file] : pending) {
        const TensorInfo* info = m.files_[file].find(name);
        if (info == nullptr) {
          throw FormatError(m.source_ + ": tensor \"" + name + "\" is mapped to " + m.files_[file].path() +
                            " but that shard does not hold it");
        }
        m.tensors_.emplace(name, Entry{info, file});
      }
      return m;
    }
    fs::path single = dir / "model.safetensors";
    if (!fs::exists(single, ec)) {
      std::vector<fs::path> found;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.path().extension() == ".safetensors") found.push_back(e.path());
      }
      if (found.size() != 1) {
        throw IoError(path + ": no model.safetensors or model.safetensors.index.json" +
                      (found.empty() ? std::string(" and no .safetensors file")
                                     : " and " + std::to_string(found.size()) + " other .safetensors files"));
      }
      single = found[0];
    }
    m.source_ = single.string();
    m.files_.push_back(SafetensorsFile::open(m.source_));
  }
  m.metadata_ = m.files_[0].metadata();
  for (const TensorInfo& t : m.files_[0].tensors()) m.tensors_.emplace(t.name, Entry{&t, 0});
  return m;
}

const SafetensorsModel::Entry* SafetensorsModel::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void SafetensorsModel::release(const std::string& name) const {
  if (const Entry* e = find(name)) files_[e->file].release(*e->info);
}

Tensor SafetensorsModel::tensor(const std::string& name) const {
  const Entry* e = find(name);
  if (e == nullptr) throw InvalidArgument(source_ + ": no tensor named \"" + name + "\"");
  return files_[e->file].tensor(name);
}

Tensor SafetensorsModel::load(const std::string& name, Device device, Stream* stream) const {
  const Entry* e = find(name);
  if (e == nullptr) throw InvalidArgument(source_ + ": no tensor named \"" + name + "\"");
  return files_[e->file].load(name, device, stream);
}

int64_t SafetensorsModel::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, e] : tensors_) n += e.info->numel();
  return n;
}

uint64_t SafetensorsModel::tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, e] : tensors_) n += e.info->nbytes();
  return n;
}

}  // namespace onn
