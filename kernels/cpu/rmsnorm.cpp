// RMSNorm on the CPU: one row at a time, sums in double.
#include "kernels/backends.h"
#include "kernels/rmsnorm.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_common.h"

namespace onn {

using cpu_kernels::dispatch_float;
using cpu_kernels::ptr;

void rmsnorm_forward_cpu(const Tensor& x, const Tensor* add_t, Tensor* sum_t, const Tensor& weight, float eps, Tensor& y,
                         Tensor& rstd) {
  dispatch_float(x.dtype(), "rmsnorm_forward", [&](auto t) {
    using T = decltype(t);
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const int64_t n = x.dim(0), c = x.dim(1);
    const T* px = ptr<const T>(x);
    const T* add = add_t ? ptr<const T>(*add_t) : nullptr;
    T* sum = add_t ? ptr<T>(*sum_t) : nullptr;
    const T* w = ptr<T>(weight);
    T* py = ptr<T>(y);
    S* pr = ptr<S>(rstd);
    cpu_kernels::for_rows(n, c, [&](int64_t i) {
      const T* row = px + i * c;
      if (add != nullptr) {  // x is read before sum (which may be x) is written, element by element
        for (int64_t j = 0; j < c; ++j) sum[i * c + j] = static_cast<T>(row[j] + add[i * c + j]);
        row = sum + i * c;
      }
      double ss = 0;
      for (int64_t j = 0; j < c; ++j) ss += static_cast<double>(row[j]) * row[j];
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(c) + static_cast<double>(eps));
      pr[i] = static_cast<S>(r);
      for (int64_t j = 0; j < c; ++j) py[i * c + j] = static_cast<T>(w[j] * (row[j] * r));
    });
  });
}

// dx_j = r * w_j dy_j - r^3 / C * x_j * sum_k(w_k dy_k x_k); dweight_j = sum_n dy_j x_j r.
void rmsnorm_backward_cpu(const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                          Tensor* dweight, bool accumulate_dx) {
  dispatch_float(x.dtype(), "rmsnorm_backward", [&](auto t) {
    using T = decltype(t);
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const int64_t n = x.dim(0), c = x.dim(1);
    const T *px = ptr<T>(x), *w = ptr<T>(weight), *pdy = ptr<T>(dy);
    const S* pr = ptr<S>(rstd);
    T* pdx = ptr<T>(dx);
    // dweight: a partial sum per part, added in part order (the parts depend on the shape only).
    const int64_t grain = cpu_kernels::row_grain(c), parts = parallel_parts(n, grain);
    std::vector<double> dw(dweight ? static_cast<size_t>(c * parts) : 0, 0.0);
    parallel_for(n, grain, [&](int64_t part, int64_t begin, int64_t end) {
      double* pdw = dweight ? dw.data() + part * c : nullptr;
      for (int64_t i = begin; i < end; ++i) {
        const T* row = px + i * c;
        const T* g = pdy + i * c;
        const double r = pr[i];
        double dot = 0;
        for (int64_t j = 0; j < c; ++j) dot += static_cast<double>(w[j]) * g[j] * row[j];
        const double k = r * r * r * dot / static_cast<double>(c);
        for (int64_t j = 0; j < c; ++j) {
          const T v = static_cast<T>(r * w[j] * g[j] - k * row[j]);
          pdx[i * c + j] = accumulate_dx ? pdx[i * c + j] + v : v;
          if (pdw) pdw[j] += static_cast<double>(g[j]) * row[j] * r;
        }
      }
    });
    if (dweight) {
      S* out = ptr<S>(*dweight);
      for (int64_t j = 0; j < c; ++j) {
        double total = 0;
        for (int64_t p = 0; p < parts; ++p) total += dw[static_cast<size_t>(p * c + j)];
        out[j] = static_cast<S>(total);
      }
    }
  });
}

}  // namespace onn
