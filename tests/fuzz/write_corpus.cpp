// Writes the fuzzers' seed corpora: the crafted safetensors cases (malformed and valid), and with
// `quant`, small weights in bitsandbytes' 4-bit layout (with and without double quantization, an
// odd element count) for quant_fuzz.
#include <cstdio>
#include <random>
#include <string>

#include "kernels/quant.h"
#include "kernels/reference.h"
#include "model/quantized.h"
#include "runtime/safetensors.h"
#include "support/crafted.h"
#include "support/test_util.h"

namespace {

int write_quant_seeds(const std::string& dir) {
  std::mt19937 rng(3);
  int n = 0;
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{4, 64}, {3, 37}, {40, 72}})
    for (bool nested : {false, true}) {
      const onn::QuantTensor q =
          onn::quantize(onn::random_tensor(onn::Shape{rows, cols}, rng), onn::QuantFormat::nf4, nested, onn::cpu_allocator());
      auto entries = onn::bnb_nf4_entries("w.weight", q, onn::DType::bf16);
      entries.emplace_back("norm.weight", onn::random_tensor(onn::Shape{cols}, rng));
      onn::write_safetensors(dir + "/nf4-" + std::to_string(rows) + "x" + std::to_string(cols) + (nested ? "-dq" : "") +
                                 ".safetensors",
                             entries);
      ++n;
    }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3 || (argc == 3 && std::string(argv[2]) != "quant")) {
    std::fprintf(stderr, "usage: write_corpus DIR [quant]\n");
    return 2;
  }
  int n = 0;
  if (argc == 3) {
    n = write_quant_seeds(argv[1]);
  } else {
    for (const auto& set : {onn::test::malformed_safetensors(), onn::test::valid_safetensors()}) {
      for (const auto& c : set) {
        onn::test::write_bytes(std::string(argv[1]) + "/" + c.name + ".safetensors", c.bytes);
        ++n;
      }
    }
  }
  std::printf("wrote %d seed files to %s\n", n, argv[1]);
  return 0;
}
