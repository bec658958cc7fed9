// Cross-entropy on the CPU: per row, max then sum of exponentials in double, then the
// gradient in place.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cross_entropy.h"

namespace onn {

using cpu_kernels::ptr;

void count_valid_labels_cpu(const Tensor& labels, int32_t ignore_index, Tensor& valid) {
  const int32_t* l = ptr<const int32_t>(labels);
  int64_t count = 0;
  for (int64_t i = 0; i < labels.dim(0); ++i) count += l[i] != ignore_index ? 1 : 0;
  store_from_double(valid.data(), valid.dtype(), 0, static_cast<double>(count));
}

void cross_entropy_cpu(Tensor& logits, const Tensor& labels, const Tensor& valid, Tensor& token_loss,
                       const CrossEntropyOptions& opt) {
  cpu_kernels::dispatch_float(logits.dtype(), "cross_entropy_forward_backward", [&](auto t) {
    using T = decltype(t);
    const int64_t n = logits.dim(0), v = logits.dim(1);
    T* x = ptr<T>(logits);
    T* loss = ptr<T>(token_loss);
    const int32_t* l = ptr<const int32_t>(labels);
    const double count = load_as_double(valid.data(), valid.dtype(), 0);
    const double inv = 1.0 / (count > 1.0 ? count : 1.0);
    for (int64_t i = 0; i < n; ++i) {
      T* row = x + i * v;
      const int32_t label = l[i];
      if (label == opt.ignore_index) {
        loss[i] = T(0);
        if (opt.compute_grad)
          for (int64_t j = 0; j < v; ++j) row[j] = T(0);
        continue;
      }
      ONN_CHECK_ARG(label >= 0 && label < v, "cross_entropy_forward_backward: labels[", i, "] = ", label,
                    " is outside [0, ", v, ") and is not the ignore index ", opt.ignore_index);
      double m = -INFINITY;
      for (int64_t j = 0; j < v; ++j) m = std::max(m, static_cast<double>(row[j]));
      double s = 0;
      for (int64_t j = 0; j < v; ++j) s += std::exp(row[j] - m);
      const double lse = m + std::log(s);
      loss[i] = static_cast<T>(lse - row[label]);
      if (opt.compute_grad) {
        for (int64_t j = 0; j < v; ++j) row[j] = static_cast<T>((std::exp(row[j] - lse) - (j == label ? 1.0 : 0.0)) * inv);
      }
    }
  });
}

void mean_loss_cpu(const Tensor& token_loss, const Tensor& valid, Tensor& loss) {
  double s = 0;
  for (int64_t i = 0; i < token_loss.dim(0); ++i) s += load_as_double(token_loss.data(), token_loss.dtype(), static_cast<size_t>(i));
  const double count = load_as_double(valid.data(), valid.dtype(), 0);
  store_from_double(loss.data(), loss.dtype(), 0, s / (count > 1.0 ? count : 1.0));
}

}  // namespace onn
