// Element types ONN stores, their sizes and safetensors names, and the f32 <-> bf16/f16
// conversions (round to nearest even; NaN stays NaN, Inf stays Inf).
#pragma once

#include <cstddef>
#include <bit>
#include <cstdint>
#include <optional>
#include <string_view>

namespace onn {

// f64 exists for the CPU reference: finite-difference tests run the CPU kernels in double.
enum class DType : uint8_t { f32, f16, bf16, i8, u8, i32, i64, boolean, f64 };

inline constexpr DType kAllDTypes[] = {DType::f32, DType::f16, DType::bf16,    DType::i8, DType::u8,
                                       DType::i32, DType::i64, DType::boolean, DType::f64};

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i8: return 1;
    case DType::u8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::boolean: return 1;
    case DType::f64: return 8;
  }
  return 0;
}

// The safetensors dtype string: "F32", "F16", "BF16", "I8", "U8", "I32", "I64", "BOOL", "F64".
std::string_view dtype_name(DType t);
// Inverse of dtype_name; nullopt for any other string (including valid safetensors dtypes
// ONN does not store, such as "F8_E4M3").
std::optional<DType> dtype_from_name(std::string_view name);

bool dtype_is_float(DType t);

// Bit-level conversions. Rounding is to nearest, ties to even; overflow gives +-Inf in f16
// and (by construction of bf16) never happens for finite bf16 inputs.
// Inline, so loops over it vectorise.
inline uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  // NaN: keep sign and the top payload bits, and force a quiet bit so truncation cannot turn it
  // into Inf. Otherwise round to nearest even (Inf stays Inf: its low half is zero).
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// Exact: the bits moved up (inline, so loops over it vectorise).
inline float bf16_bits_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }
uint16_t f32_to_f16_bits(float f);
float f16_bits_to_f32(uint16_t h);

// Read element i of a buffer of type t as double / write a double into it (test and
// printing helper; integer types truncate toward zero, bool is x != 0).
double load_as_double(const void* base, DType t, size_t i);
void store_from_double(void* base, DType t, size_t i, double v);

}  // namespace onn
