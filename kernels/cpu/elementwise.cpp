// Elementwise ops on the CPU: plain loops over contiguous storage, threaded over parts of
// kPartElements (each element computed alone: the bits do not depend on the thread count).
#include "kernels/backends.h"
#include "kernels/elementwise.h"

#include <cstring>

#include "kernels/counter_rng.h"
#include "kernels/cpu/cpu_common.h"

namespace onn {

using cpu_kernels::dispatch_float;
using cpu_kernels::ptr;

namespace {
// fn(i) for every element i of n: rows of one element, in parts of kPartElements.
template <typename F>
void for_elements(int64_t n, F&& fn) {
  cpu_kernels::for_rows(n, 1, fn);
}
}  // namespace

void cast_cpu(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  if (src.dtype() == dst.dtype()) {
    if (src.data() != dst.data()) std::memcpy(dst.data(), src.data(), src.nbytes());
    return;
  }
  if (src.dtype() == DType::bf16 && dst.dtype() == DType::f32) {
    const uint16_t* s = ptr<uint16_t>(src);
    float* d = ptr<float>(dst);
    for_elements(n, [&](int64_t i) { d[i] = bf16_bits_to_f32(s[i]); });
    return;
  }
  if (src.dtype() == DType::f32 && dst.dtype() == DType::bf16) {
    const float* s = ptr<float>(src);
    uint16_t* d = ptr<uint16_t>(dst);
    for_elements(n, [&](int64_t i) { d[i] = f32_to_bf16_bits(s[i]); });
    return;
  }
  for_elements(n, [&](int64_t i) {
    store_from_double(dst.data(), dst.dtype(), static_cast<size_t>(i),
                      load_as_double(src.data(), src.dtype(), static_cast<size_t>(i)));
  });
}

void add_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  dispatch_float(a.dtype(), "add", [&](auto t) {
    using T = decltype(t);
    const T *pa = ptr<T>(a), *pb = ptr<T>(b);
    T* po = ptr<T>(out);
    for_elements(a.numel(), [&](int64_t i) { po[i] = pa[i] + pb[i]; });
  });
}

void scale_cpu(Tensor& x, float s) {
  dispatch_float(x.dtype(), "scale", [&](auto t) {
    using T = decltype(t);
    T* p = ptr<T>(x);
    for_elements(x.numel(), [&](int64_t i) { p[i] *= static_cast<T>(s); });
  });
}

void fill_cpu(Tensor& x, float value) {
  dispatch_float(x.dtype(), "fill", [&](auto t) {
    using T = decltype(t);
    T* p = ptr<T>(x);
    for_elements(x.numel(), [&](int64_t i) { p[i] = static_cast<T>(value); });
  });
}

void dropout_cpu(const Tensor& x, float p, uint64_t seed, Tensor& out) {
  dispatch_float(x.dtype(), "dropout", [&](auto t) {
    using T = decltype(t);
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    const T keep_scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(p)));
    for_elements(x.numel(), [&](int64_t i) {
      po[i] = counter_uniform(seed, static_cast<uint64_t>(i)) >= p ? px[i] * keep_scale : T(0);
    });
  });
}

}  // namespace onn
