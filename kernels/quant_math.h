// The per-element arithmetic of the quantized formats (kernels/quant.h), shared by the CPU
// backend, the CUDA kernels and the quantizer, so every path rounds the same way. Private to
// kernels/.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/counter_rng.h"  // ONN_HOST_DEVICE

namespace onn::quant_math {

// E4M3 "fn": 1 sign, 4 exponent (bias 7), 3 mantissa bits; exponent 0 is subnormal (m * 2^-9);
// S.1111.111 is NaN, there is no infinity.
ONN_HOST_DEVICE float fp8_e4m3_value(uint8_t b) {
  const int e = (b >> 3) & 0xF, m = b & 7;
  float v;
  if (e == 0xF && m == 7) {
    const uint32_t nan_bits = 0x7fc00000u;
    memcpy(&v, &nan_bits, sizeof v);
    return v;
  }
  if (e == 0) {
    v = static_cast<float>(m) * 0.001953125f;  // 2^-9
  } else {
    // (1 + m / 8) * 2^(e - 7), built from its bits: exact.
    const uint32_t bits = static_cast<uint32_t>(e - 7 + 127) << 23 | static_cast<uint32_t>(m) << 20;
    memcpy(&v, &bits, sizeof v);
  }
  return (b & 0x80) ? -v : v;
}

// The absmax of nf4 block `block`: the stored fp32, or, double-quantized, the nested code's
// value times its 256-block's absmax plus the offset (two fp32 roundings, bitsandbytes' order).
ONN_HOST_DEVICE float nf4_block_absmax(const float* absmax, const uint8_t* qabsmax, const float* nested_code,
                                       const float* nested_absmax, float offset, int64_t block,
                                       int64_t nested_block) {
  if (!qabsmax) return absmax[block];
  // Rounded product, then the add: never one fused multiply-add (nvcc fuses a * b + c by
  // default; the host build has no FMA contraction).
#if defined(__CUDA_ARCH__)
  const float scaled = __fmul_rn(nested_code[qabsmax[block]], nested_absmax[block / nested_block]);
#else
  const float scaled = nested_code[qabsmax[block]] * nested_absmax[block / nested_block];
#endif
  return scaled + offset;
}

// Element e of the flattened nf4 original: code[its nibble] * its block's absmax.
ONN_HOST_DEVICE float nf4_element(const uint8_t* packed, const float* code, int64_t e, float block_absmax) {
  const uint8_t byte = packed[e >> 1];
  const int nibble = (e & 1) ? (byte & 0xF) : (byte >> 4);
  return code[nibble] * block_absmax;
}

// int8 and fp8: the row's absmax over the format's maximum, the one scale both backends use.
ONN_HOST_DEVICE float row_scale(float absmax, float format_max) { return absmax / format_max; }

}  // namespace onn::quant_math
