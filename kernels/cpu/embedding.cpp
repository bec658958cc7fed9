// Embedding on the CPU: row copies, and a scatter-add in position order. Ids are checked first
// (an error names the first bad one); then rows (forward) or columns (backward: each column of
// the gradient takes its adds in position order) are split into parts.
#include <cstring>

#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/embedding.h"

namespace onn {

namespace {
void check_id(int32_t id, int64_t i, int64_t v, const char* op) {
  ONN_CHECK_ARG(id >= 0 && id < v, op, ": ids[", i, "] = ", id, " is outside the vocabulary [0, ", v, ")");
}
}  // namespace

void embedding_forward_cpu(const Tensor& weight, const Tensor& ids, Tensor& out) {
  const int64_t n = ids.dim(0), v = weight.dim(0);
  const size_t row = static_cast<size_t>(weight.dim(1)) * dtype_size(weight.dtype());
  const int32_t* pid = cpu_kernels::ptr<const int32_t>(ids);
  for (int64_t i = 0; i < n; ++i) check_id(pid[i], i, v, "embedding_forward");
  cpu_kernels::for_rows(n, weight.dim(1), [&](int64_t i) {
    std::memcpy(static_cast<char*>(out.data()) + static_cast<size_t>(i) * row,
                static_cast<const char*>(weight.data()) + static_cast<size_t>(pid[i]) * row, row);
  });
}

void embedding_backward_cpu(const Tensor& ids, const Tensor& dout, Tensor& dweight) {
  cpu_kernels::dispatch_float(dout.dtype(), "embedding_backward", [&](auto t) {
    using T = decltype(t);
    const int64_t n = ids.dim(0), c = dout.dim(1), v = dweight.dim(0);
    const int32_t* pid = cpu_kernels::ptr<const int32_t>(ids);
    for (int64_t i = 0; i < n; ++i) check_id(pid[i], i, v, "embedding_backward");
    const T* g = cpu_kernels::ptr<const T>(dout);
    T* dw = cpu_kernels::ptr<T>(dweight);
    parallel_for(c, cpu_kernels::row_grain(n), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = begin; j < end; ++j) dw[pid[i] * c + j] += g[i * c + j];
    });
  });
}

}  // namespace onn
