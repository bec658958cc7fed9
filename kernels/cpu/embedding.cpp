// Embedding on the CPU: row copies, and a scatter-add in position order.
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
  for (int64_t i = 0; i < n; ++i) {
    check_id(pid[i], i, v, "embedding_forward");
    std::memcpy(static_cast<char*>(out.data()) + static_cast<size_t>(i) * row,
                static_cast<const char*>(weight.data()) + static_cast<size_t>(pid[i]) * row, row);
  }
}

void embedding_backward_cpu(const Tensor& ids, const Tensor& dout, Tensor& dweight) {
  cpu_kernels::dispatch_float(dout.dtype(), "embedding_backward", [&](auto t) {
    using T = decltype(t);
    const int64_t n = ids.dim(0), c = dout.dim(1), v = dweight.dim(0);
    const int32_t* pid = cpu_kernels::ptr<const int32_t>(ids);
    for (int64_t i = 0; i < n; ++i) check_id(pid[i], i, v, "embedding_backward");
    const T* g = cpu_kernels::ptr<const T>(dout);
    T* dw = cpu_kernels::ptr<T>(dweight);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j) dw[pid[i] * c + j] += g[i * c + j];
  });
}

}  // namespace onn
