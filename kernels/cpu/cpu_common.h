// CPU kernel helpers: dispatch from a float dtype to the element type (float or double;
// the f64 instantiation is what finite-difference tests run).
#pragma once

#include <string>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace onn::cpu_kernels {

template <typename F>
void dispatch_float(DType t, const std::string& where, F&& f) {
  if (t == DType::f32) {
    f(float{});
  } else if (t == DType::f64) {
    f(double{});
  } else {
    throw InvalidArgument(where + ": CPU kernels take F32 or F64, got " + std::string(dtype_name(t)));
  }
}

template <typename T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.data());
}

}  // namespace onn::cpu_kernels
