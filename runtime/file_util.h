// Files: read-only memory maps, whole-file reads with a size bound, and atomic writes
// (temp file in the same folder, fsync, rename, fsync the folder) so that a crash or a
// failed write never leaves a half-written file under the final name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace onn {

class MappedFile {
 public:
  // Throws IoError naming the path when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops the whole pages inside [begin, end) from memory (they are read from the file again
  // if touched): a reader streaming through a file larger than RAM releases what it has read.
  void release(size_t begin, size_t end) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// The whole file; IoError if missing or larger than max_bytes.
std::string read_file(const std::string& path, size_t max_bytes);

// 64-bit FNV-1a of `bytes` bytes, continuing from `h` (the offset basis by default): file and
// data fingerprints, not security.
inline constexpr uint64_t kFnv1aBasis = 0xcbf29ce484222325ull;
inline uint64_t fnv1a(const void* data, size_t bytes, uint64_t h = kFnv1aBasis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}
inline uint64_t fnv1a(std::string_view s, uint64_t h = kFnv1aBasis) { return fnv1a(s.data(), s.size(), h); }

// `text` as the whole of `path`, through an AtomicFile: the old file or the new one, never half.
void write_file_atomic(const std::string& path, std::string_view text);

// A whole folder written at once: `fill` writes into "<out>.<tag>.tmp" beside it, which is then
// renamed to `out_dir`; on any error the temporary folder is removed and `out_dir` is as it
// was. `out_dir` must be new or an empty folder, and none of `inputs` (InvalidArgument).
void write_folder_atomic(const std::string& out_dir, const std::vector<std::string>& inputs, const std::string& tag,
                         const std::function<void(const std::string& tmp_dir)>& fill);

class AtomicFile {
 public:
  // Creates "<dir>/.<name>.tmp.XXXXXX" beside the target.
  explicit AtomicFile(std::string target_path);
  // Removes the temp file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const uint8_t> bytes);
  void write(const void* data, size_t n) { write({static_cast<const uint8_t*>(data), n}); }
  // fsync, rename over the target, fsync the folder.
  void commit();
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string target_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace onn
