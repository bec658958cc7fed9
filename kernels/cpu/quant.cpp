// Dequantization on the CPU: one pass over the weight's elements, in the compute dtype, threaded;
// and the quantized matrix-vector product of decode, which dequantizes a row at a time.
#include <array>
#include <vector>

#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/quant_math.h"

namespace onn {

using namespace cpu_kernels;

namespace {

// Elements [begin, end) of the weight (its own indices; the parts are read at row0 * cols on)
// into out[0, end - begin).
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
    if (e % kNf4Block == 0 && i + kNf4Block <= end) {
      // A whole block: the 16 values times its absmax once (the same fp32 products), two per byte.
      const float a = quant_math::nf4_block_absmax(absmax, qabsmax, ncode, nabsmax, q.nested_offset, e / kNf4Block,
                                                   kNf4NestedBlock);
      float table[kNf4Codes];
      for (int c = 0; c < kNf4Codes; ++c) table[c] = code[c] * a;
      const uint8_t* bytes = packed + e / 2;
      T* o = out + (i - begin);
      for (int64_t j = 0; j < kNf4Block / 2; ++j) {
        o[2 * j] = static_cast<T>(table[bytes[j] >> 4]);
        o[2 * j + 1] = static_cast<T>(table[bytes[j] & 0xF]);
      }
      i += kNf4Block - 1;
      continue;
    }
    if (e / kNf4Block != block) {
      block = e / kNf4Block;
      am = quant_math::nf4_block_absmax(absmax, qabsmax, ncode, nabsmax, q.nested_offset, block, kNf4NestedBlock);
    }
    out[i - begin] = static_cast<T>(quant_math::nf4_element(packed, code, e, am));
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

// out = in * scale, element by element (restrict: a byte pointer may alias anything otherwise,
// and the loops would not vectorise).
template <typename T>
void scale_int8(const int8_t* __restrict in, int64_t n, float scale, T* __restrict out) {
  for (int64_t c = 0; c < n; ++c) out[c] = static_cast<T>(static_cast<float>(in[c]) * scale);
}
template <typename T>
void scale_fp8(const uint8_t* __restrict in, int64_t n, float scale, const float* __restrict values,
               T* __restrict out) {
  for (int64_t c = 0; c < n; ++c) out[c] = static_cast<T>(values[in[c]] * scale);
}

template <typename T>
void widen_bf16(const uint16_t* __restrict in, int64_t n, T* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(bf16_bits_to_f32(in[i]));
}

// Rows [begin, end) of the weight into out[0, (end - begin) * cols).
template <typename T>
void dequantize_rows(const QuantTensor& q, T* out, int64_t begin, int64_t end) {
  if (q.format == QuantFormat::bf16) {
    widen_bf16(ptr<uint16_t>(q.data) + (q.row0 + begin) * q.cols, (end - begin) * q.cols, out);
    return;
  }
  const float fmax = q.format == QuantFormat::int8 ? kInt8Max : kFp8E4M3Max;
  const float* absmax = ptr<float>(q.absmax);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = q.row0 + r;
    const float scale = quant_math::row_scale(absmax[row], fmax);
    T* o = out + (r - begin) * q.cols;
    if (q.format == QuantFormat::int8)
      scale_int8(ptr<int8_t>(q.data) + row * q.cols, q.cols, scale, o);
    else
      scale_fp8(ptr<uint8_t>(q.data) + row * q.cols, q.cols, scale, fp8_values().data(), o);
  }
}

}  // namespace

void dequantize_cpu(const QuantTensor& q, Tensor& out) {
  dispatch_float(out.dtype(), "dequantize", [&](auto zero) {
    using T = decltype(zero);
    // Threaded (each element computed alone, so the bits do not depend on the thread count):
    // nf4 over elements, int8, fp8 and bf16 over rows.
    if (q.format == QuantFormat::nf4)
      parallel_for(q.rows * q.cols, kPartElements,
                   [&](int64_t, int64_t begin, int64_t end) { dequantize_nf4(q, ptr<T>(out) + begin, begin, end); });
    else
      parallel_for(q.rows, row_grain(q.cols),
                   [&](int64_t, int64_t begin, int64_t end) {
                     dequantize_rows(q, ptr<T>(out) + begin * q.cols, begin, end);
                   });
  });
}

namespace {

// Rows [begin, end) of y's columns: bf16 and int8 rows read in place (int8 scaled after the sum),
// nf4 and fp8 rows dequantized into w first, then dotted with every row of x. Cloned per instruction set (vec_math.h).
ONN_CPU_CLONES void quant_rows_product(const QuantTensor& q, const float* x, int64_t m, const float* bias, float* y,
                                       int64_t begin, int64_t end, float* w) {
  const int64_t cols = q.cols;
  for (int64_t r = begin; r < end; ++r) {
    const float b = bias != nullptr ? bias[r] : 0.0f;
    if (q.format == QuantFormat::bf16) {
      const uint16_t* row = ptr<uint16_t>(q.data) + (q.row0 + r) * cols;
      for (int64_t i = 0; i < m; ++i) {
        const float* xi = x + i * cols;
        y[i * q.rows + r] = lane_sum_of(cols, [&](int64_t c) { return bf16_bits_to_f32(row[c]) * xi[c]; }) + b;
      }
      continue;
    }
    if (q.format == QuantFormat::int8) {
      const int8_t* row = ptr<int8_t>(q.data) + (q.row0 + r) * cols;
      const float scale = quant_math::row_scale(ptr<float>(q.absmax)[q.row0 + r], kInt8Max);
      for (int64_t i = 0; i < m; ++i) {
        const float* xi = x + i * cols;
        y[i * q.rows + r] = scale * lane_sum_of(cols, [&](int64_t c) { return static_cast<float>(row[c]) * xi[c]; }) + b;
      }
      continue;
    }
    if (q.format == QuantFormat::nf4)
      dequantize_nf4(q, w, r * cols, (r + 1) * cols);
    else
      dequantize_rows(q, w, r, r + 1);
    for (int64_t i = 0; i < m; ++i) y[i * q.rows + r] = lane_dot(w, x + i * cols, cols) + b;
  }
}

}  // namespace

// Rows of W in parts of about kPartElements weights: the bits depend on the shape only.
void quant_linear_cpu(const Tensor& x, const QuantTensor& q, const Tensor* bias, Tensor& y) {
  const float* pb = bias != nullptr ? ptr<float>(*bias) : nullptr;
  parallel_for(q.rows, row_grain(q.cols), [&](int64_t, int64_t begin, int64_t end) {
    std::vector<float> w(static_cast<size_t>(q.cols));
    quant_rows_product(q, ptr<float>(x), x.dim(0), pb, ptr<float>(y), begin, end, w.data());
  });
}

}  // namespace onn
