// A new user of the installed package: a tensor (onn::runtime) and a model preset's shapes
// (onn::model), with nothing but find_package(onn) and onn::model in its CMakeLists.
#include <onn/model/init.h>
#include <onn/runtime/error.h>
#include <onn/runtime/tensor.h>

#include <iostream>

int main() {
  try {
    const onn::Tensor t = onn::Tensor::from_floats(onn::Shape{2, 2}, {19, 22, 43, 50});
    const std::string s = t.str();
    const onn::ModelConfig& tiny = onn::find_preset("tiny").config;
    std::cout << "consumer ok: t = " << s.substr(s.find('\n') + 1) << " - tiny preset: " << tiny.num_hidden_layers
              << " layers, " << tiny.hidden_size << " wide\n";
    return 0;
  } catch (const onn::Error& e) {
    std::cerr << "app: " << e.what() << "\n";
    return 1;
  }
}
