// Helpers shared by the doctest suites: temporary folders, random tensors that are never
// zero, and running a binary with captured output. References and the error measure are
// in kernels/reference.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace onn::test {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Uniform in [-1, 1] with |x| >= 1e-3 (never zero); CPU f32.
Tensor random_tensor(const Shape& shape, std::mt19937& rng);

struct ProcessResult {
  int exit_code = -1;  // -signal when killed by a signal
  std::string out;
  std::string err;
};
ProcessResult run_process(const std::vector<std::string>& argv);

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace onn::test
