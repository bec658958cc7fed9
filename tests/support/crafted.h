// Hand-crafted safetensors images, one per defect the reader must refuse, plus valid ones.
// Used by the reader tests, the onn-info tests and as the fuzzer's seed corpus.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace onn::test {

struct CraftedFile {
  std::string name;      // short id, also the file name stem
  std::vector<uint8_t> bytes;
  std::string expected;  // substring of the error message ("" for valid files)
};

// An image with this header text and `data_bytes` bytes of data (each byte = its index).
std::vector<uint8_t> safetensors_image(const std::string& header, size_t data_bytes);

std::vector<CraftedFile> malformed_safetensors();
std::vector<CraftedFile> valid_safetensors();

}  // namespace onn::test
