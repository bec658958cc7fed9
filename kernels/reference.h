// Double-precision references and the error measure every parity check uses (tests, the
// self-check, GPU verification): plain loops, written for clarity, not speed.
#pragma once

#include <vector>

#include "kernels/matmul.h"
#include "runtime/tensor.h"

namespace onn {

// ||out - ref|| / ||ref|| over all elements of a CPU tensor (any float dtype); any NaN in
// out gives +Inf.
double normalized_error(const Tensor& out, const std::vector<double>& ref);

// matmul in double precision with the same shapes and options as matmul(); c_in supplies
// beta * c (may be null when beta == 0). CPU tensors of any float dtype.
std::vector<double> matmul_reference(const Tensor& a, const Tensor& b, const MatmulOptions& opt,
                                     const Tensor* c_in = nullptr);

}  // namespace onn
