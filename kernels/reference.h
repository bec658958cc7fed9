// Double-precision references and the error measure every parity check uses (tests, the
// self-check, GPU verification): plain loops, written for clarity, not speed.
#pragma once

#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "runtime/tensor.h"

namespace onn {

// ||out - ref|| / ||ref|| over all elements of a CPU tensor (any float dtype); any NaN in
// out gives +Inf.
// A CPU f32 tensor uniform in [-1, 1] with |x| >= 1e-3: parity checks never run on zeros,
// which hide unwritten outputs and wrong indexing.
Tensor random_tensor(const Shape& shape, std::mt19937& rng);

double normalized_error(const Tensor& out, const std::vector<double>& ref);

// matmul in double precision with the same shapes and options as matmul(); c_in supplies
// beta * c (may be null when beta == 0). CPU tensors of any float dtype.
std::vector<double> matmul_reference(const Tensor& a, const Tensor& b, const MatmulOptions& opt,
                                     const Tensor* c_in = nullptr);

}  // namespace onn
