// Finite-difference helpers for the kernel tests.
#include "support/grad_check.h"

#include <cmath>
#include <cstring>

#include "kernels/reference.h"

namespace onn::test {

Tensor random64(const Shape& shape, std::mt19937& rng, double scale) {
  const Tensor f = random_tensor(shape, rng);
  Tensor t = f.to_dtype(DType::f64);
  double* p = static_cast<double*>(t.data());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] *= scale;
  return t;
}

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    s += load_as_double(a.data(), a.dtype(), static_cast<size_t>(i)) *
         load_as_double(b.data(), b.dtype(), static_cast<size_t>(i));
  return s;
}

double rel_error(const Tensor& a, const std::vector<double>& b) { return normalized_error(a, b); }

double rel_error(const Tensor& a, const Tensor& b) {
  std::vector<double> ref(static_cast<size_t>(b.numel()));
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = load_as_double(b.data(), b.dtype(), i);
  return normalized_error(a, ref);
}

std::vector<double> numeric_grad(Tensor& x, const std::function<double()>& loss, double h) {
  double* p = static_cast<double*>(x.data());
  std::vector<double> g(static_cast<size_t>(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = loss();
    p[i] = keep - h;
    const double down = loss();
    p[i] = keep;
    g[static_cast<size_t>(i)] = (up - down) / (2 * h);
  }
  return g;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  std::memcpy(c.data(), t.data(), t.nbytes());
  return c;
}

Tensor i32_tensor(const std::vector<int32_t>& values) {
  Tensor t = Tensor::empty(Shape{static_cast<int64_t>(values.size())}, DType::i32);
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

}  // namespace onn::test
