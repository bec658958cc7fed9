// libFuzzer target for quantized weights in bitsandbytes' 4-bit layout: any safetensors image is
// read as a model, every weight whose .absmax entry exists is read and checked (parts, dtypes,
// sizes, the quant_state JSON against them) and then dequantized on the CPU. Either that works,
// with every value finite or the file refused, or it is refused with onn::FormatError. Anything
// else (a crash, a sanitizer report, another exception type) is a bug. The input goes through a
// file in /dev/shm because models open folders or files by path.
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "kernels/quant.h"
#include "model/quantized.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/onn-quant-fuzz-" + std::to_string(::getpid()) + ".safetensors";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  try {
    const onn::SafetensorsModel st = onn::SafetensorsModel::open(path);
    onn::Context ctx(onn::Device::cpu());
    for (const onn::Nf4Weight& w : onn::bnb_nf4_weights(st)) {
      // The packed bytes lie in the input and hold two codes each: the weight is that small.
      if (w.shape.numel() > static_cast<int64_t>(2 * size + 2)) __builtin_trap();
      const onn::QuantTensor q = onn::read_bnb_nf4(st, w.name, w.shape);
      onn::Tensor out = onn::Tensor::empty(w.shape, onn::DType::f32);
      onn::dequantize(ctx, q, out);
      volatile float sink = 0;
      for (int64_t i = 0; i < out.numel(); ++i) sink = sink + out.data_as<float>()[i];
      (void)sink;
    }
  } catch (const onn::FormatError&) {
  }
  return 0;
}
