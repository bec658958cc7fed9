// CPU kernel helpers: dispatch from a float dtype to the element type (float or double;
// the f64 instantiation is what finite-difference tests run).
#pragma once

#include <algorithm>
#include <string>

#include "runtime/error.h"
#include "runtime/parallel.h"
#include "runtime/tensor.h"

namespace onn::cpu_kernels {

// Elements per part of a row-parallel kernel (runtime/parallel.h): the parts, and so the bits,
// depend on the shape only.
inline constexpr int64_t kPartElements = 16384;
inline int64_t row_grain(int64_t row_elements) { return std::max<int64_t>(1, kPartElements / std::max<int64_t>(row_elements, 1)); }

// fn(i) for every row i of n, the rows split into parts of row_grain(row_elements).
template <typename F>
void for_rows(int64_t n, int64_t row_elements, F&& fn) {
  parallel_for(n, row_grain(row_elements), [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fn(i);
  });
}

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
