// Uses ONN as a library: a GEMM on the CPU and a safetensors round trip.
#include <onn/kernels/matmul.h>
#include <onn/runtime/error.h>
#include <onn/runtime/safetensors.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: onn_embed_example OUT.safetensors\n";
    return 2;
  }
  try {
    onn::Context ctx(onn::Device::cpu());
    const onn::Tensor a = onn::Tensor::from_floats(onn::Shape{2, 2}, {1, 2, 3, 4});
    const onn::Tensor b = onn::Tensor::from_floats(onn::Shape{2, 2}, {5, 6, 7, 8});
    onn::write_safetensors(argv[1], {{"c", onn::matmul(ctx, a, b)}});
    const onn::Tensor c = onn::SafetensorsFile::open(argv[1]).tensor("c");
    std::string s = c.str();
    std::cout << "embed ok: c = " << s.substr(s.find('\n') + 1) << "\n";
    return 0;
  } catch (const onn::Error& e) {
    std::cerr << "onn_embed_example: " << e.what() << "\n";
    return 1;
  }
}
