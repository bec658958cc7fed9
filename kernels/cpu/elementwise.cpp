// Elementwise ops on the CPU: plain loops over contiguous storage.
#include "kernels/backends.h"
#include "kernels/elementwise.h"

#include <cstring>

#include "kernels/counter_rng.h"
#include "kernels/cpu/cpu_common.h"

namespace onn {

using cpu_kernels::dispatch_float;
using cpu_kernels::ptr;

void cast_cpu(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  if (src.dtype() == dst.dtype()) {
    if (src.data() != dst.data()) std::memcpy(dst.data(), src.data(), src.nbytes());
    return;
  }
  if (src.dtype() == DType::bf16 && dst.dtype() == DType::f32) {
    const uint16_t* s = ptr<uint16_t>(src);
    float* d = ptr<float>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_bits_to_f32(s[i]);
    return;
  }
  if (src.dtype() == DType::f32 && dst.dtype() == DType::bf16) {
    const float* s = ptr<float>(src);
    uint16_t* d = ptr<uint16_t>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16_bits(s[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    store_from_double(dst.data(), dst.dtype(), static_cast<size_t>(i),
                      load_as_double(src.data(), src.dtype(), static_cast<size_t>(i)));
}

void add_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  dispatch_float(a.dtype(), "add", [&](auto t) {
    using T = decltype(t);
    const T *pa = ptr<T>(a), *pb = ptr<T>(b);
    T* po = ptr<T>(out);
    for (int64_t i = 0; i < a.numel(); ++i) po[i] = pa[i] + pb[i];
  });
}

void scale_cpu(Tensor& x, float s) {
  dispatch_float(x.dtype(), "scale", [&](auto t) {
    using T = decltype(t);
    T* p = ptr<T>(x);
    for (int64_t i = 0; i < x.numel(); ++i) p[i] *= static_cast<T>(s);
  });
}

void fill_cpu(Tensor& x, float value) {
  dispatch_float(x.dtype(), "fill", [&](auto t) {
    using T = decltype(t);
    T* p = ptr<T>(x);
    for (int64_t i = 0; i < x.numel(); ++i) p[i] = static_cast<T>(value);
  });
}

void dropout_cpu(const Tensor& x, float p, uint64_t seed, Tensor& out) {
  dispatch_float(x.dtype(), "dropout", [&](auto t) {
    using T = decltype(t);
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    const T keep_scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(p)));
    for (int64_t i = 0; i < x.numel(); ++i)
      po[i] = counter_uniform(seed, static_cast<uint64_t>(i)) >= p ? px[i] * keep_scale : T(0);
  });
}

}  // namespace onn
