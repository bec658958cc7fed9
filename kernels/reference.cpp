// Double-precision references.
#include "kernels/backends.h"
#include "kernels/reference.h"

#include <cmath>

#include "runtime/error.h"

namespace onn {

Tensor random_tensor(const Shape& shape, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  Tensor t = Tensor::empty(shape, DType::f32);
  float* p = t.numel() ? t.data_as<float>() : nullptr;
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = d(rng);
    if (std::fabs(v) < 1e-3f) v = v < 0 ? -0.5f : 0.5f;
    p[i] = v;
  }
  return t;
}

double normalized_error(const Tensor& out, const std::vector<double>& ref) {
  ONN_CHECK_ARG(out.device().is_cpu() && static_cast<size_t>(out.numel()) == ref.size(),
                "normalized_error: need a CPU tensor of ", ref.size(), " elements, got ", out.shape().str(), " on ",
                out.device().str());
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double o = load_as_double(out.data(), out.dtype(), i);
    if (std::isnan(o)) return INFINITY;
    num += (o - ref[i]) * (o - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

std::vector<double> matmul_reference(const Tensor& a, const Tensor& b, const MatmulOptions& opt, const Tensor* c_in) {
  ONN_CHECK_ARG(a.device().is_cpu() && b.device().is_cpu(), "matmul_reference takes CPU tensors");
  const int64_t batch = a.rank() == 3 ? a.dim(0) : (b.rank() == 3 ? b.dim(0) : 1);
  const int64_t ar = a.dim(-2), ac = a.dim(-1), br = b.dim(-2), bc = b.dim(-1);
  const int64_t m = opt.trans_a ? ac : ar, k = opt.trans_a ? ar : ac, n = opt.trans_b ? br : bc;
  std::vector<double> r(static_cast<size_t>(batch * m * n));
  for (int64_t z = 0; z < batch; ++z) {
    const int64_t ao = a.rank() == 3 ? z * ar * ac : 0;
    const int64_t bo = b.rank() == 3 ? z * br * bc : 0;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) {
          const int64_t ia = ao + (opt.trans_a ? p * ac + i : i * ac + p);
          const int64_t ib = bo + (opt.trans_b ? j * bc + p : p * bc + j);
          s += load_as_double(a.data(), a.dtype(), static_cast<size_t>(ia)) *
               load_as_double(b.data(), b.dtype(), static_cast<size_t>(ib));
        }
        const size_t ic = static_cast<size_t>((z * m + i) * n + j);
        double v = opt.alpha * s;
        if (opt.beta != 0.0f && c_in != nullptr) v += opt.beta * load_as_double(c_in->data(), c_in->dtype(), ic);
        if (opt.bias != nullptr) v += load_as_double(opt.bias->data(), opt.bias->dtype(), static_cast<size_t>(j));
        r[ic] = v;
      }
    }
  }
  return r;
}

}  // namespace onn
