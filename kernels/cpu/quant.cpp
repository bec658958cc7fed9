// Dequantization on the CPU: one pass over the weight's elements, in the compute dtype, threaded.
#include <array>

#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/quant_math.h"

namespace onn {

using namespace cpu_kernels;

namespace {

// Elements [begin, end) of the weight (its own indices; the parts are read at row0 * cols on).
template <typename T>
void dequantize_nf4(const QuantTensor& q, T* out, int64_t begin, int64_t end) {
  const int64_t e0 = q.row0 * q.cols;
  const uint8_t* packed = ptr<uint8_t>(q.data);
  const float* code = ptr<float>(q.code);
  const bool dq = q.double_quant();
  const float* absmax = dq ? nullptr : ptr<float>(q.absmax);
  const uint8_t* qabsmax = dq ? ptr<uint8_t>(q.absmax) : nullptr;
  const float* ncode = dq ? ptr<float>(q.nested_code) : nullptr;
  const float* nabsmax = dq ? ptr<float>(q.nested_absmax) : nullptr;
  int64_t block = -1;
  float am = 0.0f;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t e = e0 + i;
    if (e / kNf4Block != block) {
      block = e / kNf4Block;
      am = quant_math::nf4_block_absmax(absmax, qabsmax, ncode, nabsmax, q.nested_offset, block, kNf4NestedBlock);
    }
    out[i] = static_cast<T>(quant_math::nf4_element(packed, code, e, am));
  }
}

// The 256 E4M3 values, looked up instead of decoded per element.
const std::array<float, 256>& fp8_values() {
  static const std::array<float, 256> v = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b) t[static_cast<size_t>(b)] = quant_math::fp8_e4m3_value(static_cast<uint8_t>(b));
    return t;
  }();
  return v;
}

// Rows [begin, end) of the weight.
template <typename T>
void dequantize_rows(const QuantTensor& q, T* out, int64_t begin, int64_t end) {
  const float fmax = q.format == QuantFormat::int8 ? kInt8Max : kFp8E4M3Max;
  const float* absmax = ptr<float>(q.absmax);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = q.row0 + r;
    const float scale = quant_math::row_scale(absmax[row], fmax);
    T* o = out + r * q.cols;
    if (q.format == QuantFormat::int8) {
      const int8_t* in = ptr<int8_t>(q.data) + row * q.cols;
      for (int64_t c = 0; c < q.cols; ++c) o[c] = static_cast<T>(static_cast<float>(in[c]) * scale);
    } else {
      const uint8_t* in = ptr<uint8_t>(q.data) + row * q.cols;
      for (int64_t c = 0; c < q.cols; ++c) o[c] = static_cast<T>(fp8_values()[in[c]] * scale);
    }
  }
}

}  // namespace

void dequantize_cpu(const QuantTensor& q, Tensor& out) {
  dispatch_float(out.dtype(), "dequantize", [&](auto zero) {
    using T = decltype(zero);
    // Threaded (each element computed alone, so the bits do not depend on the thread count):
    // nf4 over elements, int8 and fp8 over rows.
    if (q.format == QuantFormat::nf4)
      parallel_for(q.rows * q.cols, kPartElements,
                   [&](int64_t, int64_t begin, int64_t end) { dequantize_nf4(q, ptr<T>(out), begin, end); });
    else
      parallel_for(q.rows, row_grain(q.cols),
                   [&](int64_t, int64_t begin, int64_t end) { dequantize_rows(q, ptr<T>(out), begin, end); });
  });
}

}  // namespace onn
