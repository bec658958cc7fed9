// Cross-entropy on the CPU: per row (rows threaded, each computed alone), max then sum of
// exponentials summed in double, then the gradient in place. F32 rows take exp_approx over fixed
// lanes (vectorised, within a few ulp of exp); F64 rows std::exp in order (the finite-difference
// reference).
#include <algorithm>
#include <cmath>

#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/cross_entropy.h"

namespace onn {

using cpu_kernels::ptr;

namespace {

double row_max(const double* row, int64_t n) {
  double m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, row[j]);
  return m;
}
double row_max(const float* row, int64_t n) { return cpu_kernels::lane_max(row, n); }

// The sum of exp(row[j] - m) over the row.
double sum_exp(const double* row, int64_t n, double m) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(row[j] - m);
  return s;
}
ONN_CPU_CLONES double sum_exp(const float* row, int64_t n, double m) {
  const float mf = static_cast<float>(m);  // a logit's value: exact
  return cpu_kernels::lane_sum_of<double>(n, [&](int64_t j) { return cpu_kernels::exp_approx(row[j] - mf); });
}

// row[j] = (exp(row[j] - lse) - [j == label]) * inv: the gradient of the row's loss (label
// outside [0, n): none in this row).
void softmax_grad(double* row, int64_t n, double lse, int64_t label, double inv) {
  for (int64_t j = 0; j < n; ++j) row[j] = (std::exp(row[j] - lse) - (j == label ? 1.0 : 0.0)) * inv;
}
ONN_CPU_CLONES void softmax_grad(float* row, int64_t n, double lse, int64_t label, double inv) {
  for (int64_t j = 0; j < n; ++j) {
    const double e = cpu_kernels::exp_approx(static_cast<float>(row[j] - lse));
    row[j] = static_cast<float>((e - (j == label ? 1.0 : 0.0)) * inv);
  }
}

}  // namespace

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
    for (int64_t i = 0; i < n; ++i)  // checked first, so the error names the first bad label
      ONN_CHECK_ARG(l[i] == opt.ignore_index || (l[i] >= 0 && l[i] < v), "cross_entropy_forward_backward: labels[",
                    i, "] = ", l[i], " is outside [0, ", v, ") and is not the ignore index ", opt.ignore_index);
    cpu_kernels::for_rows(n, v, [&](int64_t i) {
      T* row = x + i * v;
      const int32_t label = l[i];
      if (label == opt.ignore_index) {
        loss[i] = T(0);
        if (opt.compute_grad)
          for (int64_t j = 0; j < v; ++j) row[j] = T(0);
        return;
      }
      const double m = row_max(row, v);
      const double lse = m + std::log(sum_exp(row, v, m));
      loss[i] = static_cast<T>(lse - row[label]);
      if (opt.compute_grad) softmax_grad(row, v, lse, label, inv);
    });
  });
}

void vocab_chunk_stats_cpu(const Tensor& logits, const Tensor& labels, int64_t v0, Tensor& m, Tensor& l,
                           Tensor& target, int32_t ignore_index) {
  cpu_kernels::dispatch_float(logits.dtype(), "vocab_chunk_stats", [&](auto t) {
    using T = decltype(t);
    const int64_t n = logits.dim(0), g = logits.dim(1);
    const T* x = ptr<const T>(logits);
    T *pm = ptr<T>(m), *pl = ptr<T>(l), *pt = ptr<T>(target);
    const int32_t* lab = ptr<const int32_t>(labels);
    cpu_kernels::for_rows(n, g, [&](int64_t i) {
      if (lab[i] == ignore_index) return;
      const T* row = x + i * g;
      const double gm = row_max(row, g), gs = sum_exp(row, g, gm);
      const double old_m = pm[i], mm = std::max(old_m, gm);
      const double ls = (old_m == -INFINITY ? 0.0 : pl[i] * std::exp(old_m - mm)) + gs * std::exp(gm - mm);
      pm[i] = static_cast<T>(mm);
      pl[i] = static_cast<T>(ls);
      if (lab[i] >= v0 && lab[i] < v0 + g) pt[i] = row[lab[i] - v0];
    });
  });
}

void vocab_chunk_grad_cpu(Tensor& logits, const Tensor& labels, int64_t v0, const Tensor& m, const Tensor& l,
                          const Tensor& valid, int32_t ignore_index) {
  cpu_kernels::dispatch_float(logits.dtype(), "vocab_chunk_grad", [&](auto t) {
    using T = decltype(t);
    const int64_t n = logits.dim(0), g = logits.dim(1);
    T* x = ptr<T>(logits);
    const T *pm = ptr<const T>(m), *pl = ptr<const T>(l);
    const int32_t* lab = ptr<const int32_t>(labels);
    const double count = load_as_double(valid.data(), valid.dtype(), 0);
    const double inv = 1.0 / (count > 1.0 ? count : 1.0);
    cpu_kernels::for_rows(n, g, [&](int64_t i) {
      T* row = x + i * g;
      if (lab[i] == ignore_index) {
        std::fill(row, row + g, T(0));
        return;
      }
      const double lse = static_cast<double>(pm[i]) + std::log(static_cast<double>(pl[i]));
      softmax_grad(row, g, lse, lab[i] - v0, inv);
    });
  });
}

void vocab_chunk_loss_cpu(const Tensor& labels, const Tensor& m, const Tensor& l, const Tensor& target,
                          Tensor& token_loss, int32_t ignore_index) {
  cpu_kernels::dispatch_float(m.dtype(), "vocab_chunk_loss", [&](auto t) {
    using T = decltype(t);
    const T *pm = ptr<const T>(m), *pl = ptr<const T>(l), *pt = ptr<const T>(target);
    T* out = ptr<T>(token_loss);
    const int32_t* lab = ptr<const int32_t>(labels);
    for (int64_t i = 0; i < labels.dim(0); ++i) {
      if (lab[i] == ignore_index) {
        out[i] = T(0);
        continue;
      }
      ONN_CHECK_ARG(!std::isnan(static_cast<double>(pt[i])), "lm head loss: labels[", i, "] = ", lab[i],
                    " is outside the vocabulary and is not the ignore index ", ignore_index);
      out[i] = static_cast<T>(static_cast<double>(pm[i]) + std::log(static_cast<double>(pl[i])) - pt[i]);
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
