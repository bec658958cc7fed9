// libFuzzer target for the safetensors reader: any input either parses into a layout whose
// every tensor lies inside the input, or is refused with onn::FormatError. Anything else
// (a crash, a sanitizer report, another exception type) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "runtime/error.h"
#include "runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const onn::SafetensorsHeader h = onn::parse_safetensors(std::span<const uint8_t>(data, size), "fuzz-input");
    uint64_t sum = 0;
    for (const onn::TensorInfo& t : h.tensors) {
      if (h.data_start + t.end > size || t.numel() < 0) __builtin_trap();
      if (t.nbytes()) sum += data[h.data_start + t.begin] + data[h.data_start + t.end - 1];
    }
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const onn::FormatError&) {
  }
  return 0;
}
