// DType names and the float conversions. bf16 is the top half of an f32; f16 is IEEE binary16.
#include "runtime/dtype.h"

#include <cmath>
#include <cstring>

#include "runtime/error.h"

namespace onn {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::boolean: return "BOOL";
    case DType::f64: return "F64";
  }
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType t : kAllDTypes) {
    if (dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

bool dtype_is_float(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64;
}

static uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

static float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16_bits(float f) {
  const uint32_t u = bits_of(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) {  // NaN: quiet, keep the top payload bits
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x03ffu));
  }
  if (abs >= 0x477ff000u) {
    // >= 65520 rounds to Inf (65504 is the largest finite f16; halfway to 65536 ties away
    // to Inf since 65504's mantissa is odd).
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  if (abs < 0x38800000u) {
    // Result is subnormal or zero: value = abs * 2^24 in units of the f16 subnormal step.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal: rounds to 0
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // 14 + (112 - exp) + ... maps 2^-24 to 1
    const uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    uint32_t r = q;
    if (rem > half || (rem == half && (q & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  // Normal: rebias exponent 127 -> 15 and round the 13 dropped mantissa bits.
  const uint32_t lsb = (abs >> 13) & 1u;
  const uint32_t rounded = abs + 0x0fffu + lsb;
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x03ffu;
  if (exp == 0x1fu) return float_of(sign | 0x7f800000u | (mant << 13));  // Inf / NaN
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in f32.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  return float_of(sign | ((exp + 112u) << 23) | (mant << 13));
}

double load_as_double(const void* base, DType t, size_t i) {
  const auto* p = static_cast<const unsigned char*>(base);
  switch (t) {
    case DType::f32: { float v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case DType::f16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); return f16_bits_to_f32(v); }
    case DType::bf16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); return bf16_bits_to_f32(v); }
    case DType::i8: return static_cast<int8_t>(p[i]);
    case DType::u8: return p[i];
    case DType::i32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case DType::i64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); return static_cast<double>(v); }
    case DType::boolean: return p[i] != 0 ? 1.0 : 0.0;
    case DType::f64: { double v; std::memcpy(&v, p + 8 * i, 8); return v; }
  }
  ONN_ASSERT(false, "bad dtype");
}

void store_from_double(void* base, DType t, size_t i, double v) {
  auto* p = static_cast<unsigned char*>(base);
  switch (t) {
    case DType::f32: { const float f = static_cast<float>(v); std::memcpy(p + 4 * i, &f, 4); return; }
    case DType::f16: { const uint16_t h = f32_to_f16_bits(static_cast<float>(v)); std::memcpy(p + 2 * i, &h, 2); return; }
    case DType::bf16: { const uint16_t b = f32_to_bf16_bits(static_cast<float>(v)); std::memcpy(p + 2 * i, &b, 2); return; }
    case DType::i8: p[i] = static_cast<unsigned char>(static_cast<int8_t>(v)); return;
    case DType::u8: p[i] = static_cast<unsigned char>(v); return;
    case DType::i32: { const int32_t x = static_cast<int32_t>(v); std::memcpy(p + 4 * i, &x, 4); return; }
    case DType::i64: { const int64_t x = static_cast<int64_t>(v); std::memcpy(p + 8 * i, &x, 8); return; }
    case DType::boolean: p[i] = v != 0.0 ? 1 : 0; return;
    case DType::f64: std::memcpy(p + 8 * i, &v, 8); return;
  }
  ONN_ASSERT(false, "bad dtype");
}

}  // namespace onn
