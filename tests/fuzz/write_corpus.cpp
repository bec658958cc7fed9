// Writes the crafted safetensors cases (malformed and valid) as the fuzzer's seed corpus.
#include <cstdio>
#include <string>

#include "support/crafted.h"
#include "support/test_util.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_corpus DIR\n");
    return 2;
  }
  int n = 0;
  for (const auto& set : {onn::test::malformed_safetensors(), onn::test::valid_safetensors()}) {
    for (const auto& c : set) {
      onn::test::write_bytes(std::string(argv[1]) + "/" + c.name + ".safetensors", c.bytes);
      ++n;
    }
  }
  std::printf("wrote %d seed files to %s\n", n, argv[1]);
  return 0;
}
