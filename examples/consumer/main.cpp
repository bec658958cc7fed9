// A new user of the installed package: a GEMM on the CPU, a safetensors round trip, and a
// model preset's shapes (onn::model).
#include <onn/kernels/matmul.h>
#include <onn/model/init.h>
#include <onn/runtime/error.h>
#include <onn/runtime/safetensors.h>
#include <onn/runtime/tensor.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: app OUT.safetensors\n";
    return 2;
  }
  try {
    onn::Context ctx(onn::Device::cpu());
    const onn::Tensor a = onn::Tensor::from_floats(onn::Shape{2, 2}, {1, 2, 3, 4});
    const onn::Tensor b = onn::Tensor::from_floats(onn::Shape{2, 2}, {5, 6, 7, 8});
    onn::write_safetensors(argv[1], {{"c", onn::matmul(ctx, a, b)}});
    const onn::Tensor c = onn::SafetensorsFile::open(argv[1]).tensor("c");
    std::string s = c.str();
    const onn::ModelConfig& tiny = onn::find_preset("tiny").config;
    std::cout << "consumer ok: c = " << s.substr(s.find('\n') + 1) << " - tiny preset: " << tiny.num_hidden_layers
              << " layers, " << tiny.hidden_size << " wide\n";
    return 0;
  } catch (const onn::Error& e) {
    std::cerr << "app: " << e.what() << "\n";
    return 1;
  }
}
