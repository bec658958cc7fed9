// Finite-difference gradient checks in double precision for the CPU kernels (run on F64
// tensors), and helpers shared by the kernel tests: random F64 inputs, dot products, and the
// normalized error between two tensors.
#pragma once

#include <functional>
#include <random>
#include <vector>

#include "runtime/tensor.h"

namespace onn::test {

// A CPU F64 tensor, uniform in [-scale, scale] and never zero.
Tensor random64(const Shape& shape, std::mt19937& rng, double scale = 1.0);
// sum(a * b) over all elements (any float dtypes, same numel).
double dot(const Tensor& a, const Tensor& b);
// ||a - b|| / ||b|| over all elements; +Inf if a has a NaN.
double rel_error(const Tensor& a, const Tensor& b);
double rel_error(const Tensor& a, const std::vector<double>& b);
// d loss / d x by central differences: x (F64) is perturbed element by element by +-h and
// loss() re-evaluated; x is restored afterwards.
std::vector<double> numeric_grad(Tensor& x, const std::function<double()>& loss, double h = 1e-5);
// A copy of a CPU tensor (same dtype).
Tensor clone(const Tensor& t);
// A CPU I32 tensor with the given values (ids, positions, labels).
Tensor i32_tensor(const std::vector<int32_t>& values);

}  // namespace onn::test
