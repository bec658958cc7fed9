// safetensors: a hostile-input reader over mmap with lazy per-tensor access, an atomic
// writer, and sharded models (model.safetensors.index.json). Format: 8-byte little-endian
// header length N, N bytes of JSON header, then the tensor data; offsets in the header are
// relative to the start of the data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace onn {

class MappedFile;
class Stream;

inline constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;  // bytes, as the reference reader
inline constexpr int kSafetensorsMaxDepth = 8;
inline constexpr int kSafetensorsMaxRank = 16;

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;

  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by data offset
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

// Validates a whole safetensors image (header and layout); throws FormatError naming
// `source` and the defect. The tensor bytes themselves are not inspected.
SafetensorsHeader parse_safetensors(std::span<const uint8_t> file, const std::string& source);

class SafetensorsFile {
 public:
  // Maps the file and validates it (nothing is read from the data section).
  static SafetensorsFile open(const std::string& path);
  // Over bytes in memory (fuzzing, tests); `name` is used in error messages.
  static SafetensorsFile from_bytes(std::string name, std::vector<uint8_t> bytes);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  uint64_t file_bytes() const { return size_; }
  uint64_t header_bytes() const { return header_.data_start - 8; }

  const TensorInfo* find(const std::string& name) const;
  // Throws InvalidArgument naming the file when absent.
  const TensorInfo& info(const std::string& name) const;
  std::span<const uint8_t> bytes(const TensorInfo& t) const;
  // A CPU tensor over the mapped bytes when they are aligned for the dtype (zero copy; the
  // mapping lives as long as the tensor), else a copy.
  Tensor tensor(const std::string& name) const;
  // A copy on `device`.
  Tensor load(const std::string& name, Device device, Stream* stream = nullptr) const;
  // Drops t's pages of a mapped file from memory (read again if touched): a loader that has
  // copied or converted t gives back the page cache it held. Nothing for bytes in memory.
  void release(const TensorInfo& t) const;

 private:
  void parse();  // validates the image and builds the name index

  std::shared_ptr<const MappedFile> map_;  // when mapped
  std::string path_;
  std::shared_ptr<const void> owner_;  // MappedFile or std::vector<uint8_t>
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

// One tensor to write: raw host bytes of nbytes = numel(shape) * dtype_size(dtype).
struct TensorBytes {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
};

// A tensor to be written by a fill callback: name, dtype and shape, no data.
struct TensorSpec {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
};
// Produces one tensor's bytes into `out` (exactly its size). Called once per tensor, in name
// order, so only one tensor is held in memory at a time.
using TensorFill = std::function<void(const TensorSpec&, std::span<uint8_t> out)>;

// Writes tensors streamed from `fill` atomically, holding one tensor at a time (models larger
// than host memory). Same validation, ordering and layout as write_safetensors.
void write_safetensors_streamed(const std::string& path, std::vector<TensorSpec> specs, const TensorFill& fill,
                                const std::map<std::string, std::string>& metadata = {});

// Produces bytes [at, at + out.size()) of one tensor. Called for consecutive chunks of at most
// the chunk size, tensors in name order.
using TensorChunkFill = std::function<void(const TensorSpec&, uint64_t at, std::span<uint8_t> out)>;
// As write_safetensors_streamed, holding one chunk at a time: tensors larger than memory (a
// tokenized corpus spilled to disk).
void write_safetensors_chunked(const std::string& path, std::vector<TensorSpec> specs, const TensorChunkFill& fill,
                               uint64_t chunk_bytes, const std::map<std::string, std::string>& metadata = {});

// Writes a model's weights into `dir` as transformers does: model.safetensors when everything
// fits in one shard of `max_shard_bytes`, else model-0000i-of-0000n.safetensors plus
// model.safetensors.index.json (written last). Weight files of the other layout left in `dir`
// are removed, so the folder loads unambiguously. Returns the file names written.
std::vector<std::string> write_sharded_safetensors(const std::string& dir, std::vector<TensorSpec> specs,
                                                   const TensorFill& fill, uint64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata = {});

// Writes tensors (sorted by name) atomically; the header is padded with spaces so the data
// starts 8-byte aligned. Throws InvalidArgument for duplicate or reserved names, or a size
// that does not match its shape; IoError if the write fails (the target is then untouched).
void write_safetensors(const std::string& path, std::vector<TensorBytes> tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Tensors on any device (device tensors are copied to the host first).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A model's weights: one .safetensors file, or a folder holding model.safetensors, a
// model.safetensors.index.json with its shards, or a single *.safetensors file.
class SafetensorsModel {
 public:
  static SafetensorsModel open(const std::string& path);
  SafetensorsModel(SafetensorsModel&&) = default;
  SafetensorsModel& operator=(SafetensorsModel&&) = default;
  SafetensorsModel(const SafetensorsModel&) = delete;  // entries point into files_
  SafetensorsModel& operator=(const SafetensorsModel&) = delete;

  struct Entry {
    const TensorInfo* info;
    size_t file;  // index into files()
  };
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // Tensors by name, in name order.
  const std::map<std::string, Entry>& tensors() const { return tensors_; }
  const Entry* find(const std::string& name) const;
  Tensor tensor(const std::string& name) const;
  Tensor load(const std::string& name, Device device, Stream* stream = nullptr) const;
  // SafetensorsFile::release of the named tensor (nothing when absent).
  void release(const std::string& name) const;
  // The single file's __metadata__, or the index's "metadata" (values printed as JSON).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& source() const { return source_; }  // the file or the index path
  int64_t parameter_count() const;
  uint64_t tensor_bytes() const;

 private:
  SafetensorsModel() = default;
  std::string source_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace onn
