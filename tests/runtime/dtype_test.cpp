// DType names and sizes; f32 <-> bf16 / f16 conversions, including exhaustive round trips
// and every rounding midpoint.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "runtime/dtype.h"

using namespace onn;

static float f(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

TEST_CASE("dtype names match safetensors and sizes are right") {
  CHECK(dtype_name(DType::f32) == "F32");
  CHECK(dtype_name(DType::bf16) == "BF16");
  CHECK(dtype_name(DType::boolean) == "BOOL");
  CHECK(dtype_size(DType::i64) == 8);
  CHECK(dtype_size(DType::bf16) == 2);
  CHECK(dtype_size(DType::boolean) == 1);
  for (DType t : kAllDTypes) CHECK(dtype_from_name(dtype_name(t)) == t);
  CHECK(dtype_from_name("F64") == DType::f64);
  CHECK_FALSE(dtype_from_name("F8_E4M3").has_value());
  CHECK_FALSE(dtype_from_name("f32").has_value());
  CHECK_FALSE(dtype_from_name("").has_value());
}

TEST_CASE("bf16: known values and round to nearest even") {
  CHECK(f32_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(f32_to_bf16_bits(-2.0f) == 0xc000);
  CHECK(f32_to_bf16_bits(f(0x3f808000)) == 0x3f80);  // tie, lower is even
  CHECK(f32_to_bf16_bits(f(0x3f818000)) == 0x3f82);  // tie, upper is even
  CHECK(f32_to_bf16_bits(f(0x3f808001)) == 0x3f81);  // just above the tie
  CHECK(f32_to_bf16_bits(f(0x3f807fff)) == 0x3f80);  // just below
  CHECK(f32_to_bf16_bits(f(0x7f7fffff)) == 0x7f80);  // FLT_MAX rounds to Inf
  CHECK(f32_to_bf16_bits(INFINITY) == 0x7f80);
  CHECK(f32_to_bf16_bits(-INFINITY) == 0xff80);
  CHECK(f32_to_bf16_bits(f(0x00000001)) == 0x0000);  // smallest subnormal rounds to 0
  CHECK(f32_to_bf16_bits(-0.0f) == 0x8000);
}

TEST_CASE("bf16: NaN stays NaN, including payloads that truncation would turn into Inf") {
  for (uint32_t u : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f80ffffu}) {
    const uint16_t b = f32_to_bf16_bits(f(u));
    CHECK(std::isnan(bf16_bits_to_f32(b)));
    CHECK((b & 0x8000) == ((u >> 16) & 0x8000));
  }
}

TEST_CASE("bf16: every value round-trips and every midpoint rounds to even") {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float x = bf16_bits_to_f32(static_cast<uint16_t>(b));
    if (std::isnan(x)) {
      CHECK(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(x))));
      continue;
    }
    REQUIRE(f32_to_bf16_bits(x) == b);
    if ((b & 0x7fff) < 0x7f7f) {  // finite with a finite successor of the same sign
      const float mid = f((b << 16) | 0x8000u);
      const uint16_t even = (b & 1) ? static_cast<uint16_t>(b + 1) : static_cast<uint16_t>(b);
      REQUIRE(f32_to_bf16_bits(mid) == even);
    }
  }
}

TEST_CASE("f16: known values, overflow and subnormals") {
  CHECK(f32_to_f16_bits(1.0f) == 0x3c00);
  CHECK(f32_to_f16_bits(-2.0f) == 0xc000);
  CHECK(f32_to_f16_bits(65504.0f) == 0x7bff);
  CHECK(f32_to_f16_bits(65519.99f) == 0x7bff);
  CHECK(f32_to_f16_bits(65520.0f) == 0x7c00);  // tie between 65504 and 65536 (Inf): goes to even = Inf
  CHECK(f32_to_f16_bits(1e10f) == 0x7c00);
  CHECK(f32_to_f16_bits(-INFINITY) == 0xfc00);
  CHECK(f32_to_f16_bits(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(f32_to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000);        // tie to even (0)
  CHECK(f32_to_f16_bits(std::ldexp(1.5f, -25)) == 0x0001);
  CHECK(f32_to_f16_bits(std::ldexp(3.0f, -25)) == 0x0002);        // tie between 1 and 2 -> 2
  CHECK(f32_to_f16_bits(std::ldexp(1.0f, -14)) == 0x0400);        // smallest normal
  CHECK(f32_to_f16_bits(std::ldexp(1023.5f, -24)) == 0x0400);     // rounds up into the normals
  CHECK(f16_bits_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_bits_to_f32(0x7c00) == INFINITY);
  CHECK(std::isnan(f16_bits_to_f32(f32_to_f16_bits(f(0x7f800001)))));
  CHECK(std::isnan(f16_bits_to_f32(f32_to_f16_bits(f(0xffc00000)))));
}

TEST_CASE("f16: every value round-trips and every midpoint rounds to even") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float x = f16_bits_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(x)) continue;
    REQUIRE(f32_to_f16_bits(x) == h);
    if ((h & 0x7fff) < 0x7bff) {
      const double mid = (static_cast<double>(x) + f16_bits_to_f32(static_cast<uint16_t>(h + 1))) / 2.0;
      const uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
      REQUIRE(f32_to_f16_bits(static_cast<float>(mid)) == even);
    }
  }
}

TEST_CASE("load_as_double / store_from_double for every dtype") {
  unsigned char buf[64] = {};
  for (DType t : kAllDTypes) {
    store_from_double(buf, t, 3, 5.0);
    CHECK(load_as_double(buf, t, 3) == (t == DType::boolean ? 1.0 : 5.0));
  }
  store_from_double(buf, DType::i8, 0, -7.0);
  CHECK(load_as_double(buf, DType::i8, 0) == -7.0);
  store_from_double(buf, DType::boolean, 0, 0.25);
  CHECK(load_as_double(buf, DType::boolean, 0) == 1.0);
}
