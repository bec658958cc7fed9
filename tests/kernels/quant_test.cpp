// Quantized weights against bitsandbytes and torch (tests/data/quant_reference.safetensors,
// written by make_quant_reference.py): NF4 quantize and dequantize bit for bit, with and without
// double quantization; int8 bit for bit with bitsandbytes' codes and within half a step of the
// weight; FP8 E4M3 codes equal to torch's cast and within half an E4M3 step; row views of a
// fused original; quant_linear (the decode product) against dequantize + matmul; and malformed
// parts refused by name.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

using namespace onn;

namespace {

const char* const kCases[] = {"square", "odd", "many"};

struct Reference {
  SafetensorsFile file = SafetensorsFile::open(std::string(ONN_TEST_DATA_DIR) + "/quant_reference.safetensors");
  Tensor operator[](const std::string& name) const { return file.tensor(name); }
};

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Elements of a and b (F32) whose bits differ.
int64_t differing(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  int64_t n = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    n += std::memcmp(a.data_as<float>() + i, b.data_as<float>() + i, sizeof(float)) != 0;
  return n;
}

Tensor dequantized(const QuantTensor& q) {
  Context ctx(Device::cpu());
  Tensor out = Tensor::empty(Shape{q.rows, q.cols}, DType::f32);
  dequantize(ctx, q, out);
  return out;
}

}  // namespace

TEST_CASE("quant: NF4 quantizes to bitsandbytes' bytes and dequantizes to its values") {
  const Reference ref;
  for (const char* name : kCases) {
    CAPTURE(name);
    const Tensor w = ref[std::string(name) + ".w"];
    const std::string p = std::string("nf4.") + name;
    const QuantTensor q = quantize(w, QuantFormat::nf4, false, cpu_allocator());
    CHECK(quant_layout_error(q).empty());
    CHECK(same_bytes(q.data, ref[p + ".packed"]));
    CHECK(same_bytes(q.absmax, ref[p + ".absmax"]));
    CHECK(differing(dequantized(q), ref[p + ".dequant"]) == 0);
  }
}

TEST_CASE("quant: NF4 with double quantization matches bitsandbytes' nested absmax, code and offset") {
  const Reference ref;
  for (const char* name : kCases) {
    CAPTURE(name);
    const Tensor w = ref[std::string(name) + ".w"];
    const std::string p = std::string("nf4dq.") + name;
    const QuantTensor q = quantize(w, QuantFormat::nf4, true, cpu_allocator());
    CHECK(quant_layout_error(q).empty());
    CHECK(same_bytes(q.nested_code, ref[p + ".nested_code"]));
    CHECK(q.nested_offset == ref[p + ".offset"].data_as<float>()[0]);
    CHECK(same_bytes(q.nested_absmax, ref[p + ".nested_absmax"]));
    CHECK(same_bytes(q.absmax, ref[p + ".absmax"]));
    CHECK(same_bytes(q.data, ref[p + ".packed"]));
    CHECK(differing(dequantized(q), ref[p + ".dequant"]) == 0);
  }
}

TEST_CASE("quant: int8 per row gives bitsandbytes' codes and row absmax, within half a step of the weight") {
  const Reference ref;
  for (const char* name : kCases) {
    CAPTURE(name);
    const Tensor w = ref[std::string(name) + ".w"];
    const std::string p = std::string("int8.") + name;
    const QuantTensor q = quantize(w, QuantFormat::int8, false, cpu_allocator());
    CHECK(same_bytes(q.data, ref[p + ".q"]));
    CHECK(same_bytes(q.absmax, ref[p + ".scb"]));
    const Tensor d = dequantized(q), bnb = ref[p + ".dequant"];
    const int64_t cols = w.dim(1);
    for (int64_t i = 0; i < w.numel(); ++i) {
      const float am = q.absmax.data_as<float>()[i / cols];
      // Half a quantization step, plus the fp32 roundings of the scale and the product.
      REQUIRE(std::fabs(d.data_as<float>()[i] - w.data_as<float>()[i]) <= am / 254.0f * (1 + 1e-5f) + 1e-30f);
      REQUIRE(std::fabs(d.data_as<float>()[i] - bnb.data_as<float>()[i]) <= 2e-7f * am);
    }
  }
}

TEST_CASE("quant: FP8 E4M3 per row gives torch's float8_e4m3fn codes, within half an E4M3 step") {
  const Reference ref;
  for (const char* name : kCases) {
    CAPTURE(name);
    const Tensor w = ref[std::string(name) + ".w"];
    const QuantTensor q = quantize(w, QuantFormat::fp8, false, cpu_allocator());
    CHECK(same_bytes(q.data, ref[std::string("fp8.") + name + ".q"]));
    const Tensor d = dequantized(q);
    const int64_t cols = w.dim(1);
    for (int64_t i = 0; i < w.numel(); ++i) {
      const float x = w.data_as<float>()[i], scale = q.absmax.data_as<float>()[i / cols] / kFp8E4M3Max;
      // 3 mantissa bits: relative 2^-4 for normal values; subnormals are steps of 2^-9 * scale.
      const float tol = std::max(std::fabs(x) * 0.0625f, 0.0009765625f * scale) * (1 + 1e-5f);
      REQUIRE(std::fabs(d.data_as<float>()[i] - x) <= tol);
    }
  }
}

TEST_CASE("quant: E4M3 conversion round-trips every code and rounds ties to even") {
  for (int c = 0; c < 256; ++c) {
    const float v = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    if (std::isnan(v)) {
      CHECK((c & 0x7f) == 0x7f);
      continue;
    }
    if (v == 0.0f) continue;  // +0 and -0 both come back as their own code
    CHECK(f32_to_fp8_e4m3(v) == c);
  }
  CHECK(fp8_e4m3_to_f32(0x7e) == 448.0f);
  CHECK(f32_to_fp8_e4m3(1e9f) == 0x7e);        // saturates
  CHECK(f32_to_fp8_e4m3(1.0625f) == 0x38);     // halfway between 1 and 1.125: the even code (1.0)
  CHECK(f32_to_fp8_e4m3(1.1875f) == 0x3a);     // halfway between 1.125 and 1.25: 1.25
}

TEST_CASE("quant: a row view dequantizes to the same rows of the whole") {
  const Reference ref;
  const Tensor w = ref["many.w"];
  for (QuantFormat f : {QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8, QuantFormat::bf16}) {
    CAPTURE(quant_format_name(f));
    const QuantTensor q = quantize(w, f, true, cpu_allocator());
    const Tensor whole = dequantized(q), part = dequantized(q.row_slice(33, 101));
    CHECK(std::memcmp(part.data(), whole.data_as<float>() + 33 * w.dim(1), part.nbytes()) == 0);
  }
}

TEST_CASE("quant: quant_linear (decode's direct product) equals dequantize + matmul, row views and bias included") {
  const Reference ref;
  Context ctx(Device::cpu());
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const auto random = [&](const Shape& s) {
    Tensor t = Tensor::empty(s, DType::f32);
    for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = u(rng);
    return t;
  };
  for (const char* name : kCases)
    for (QuantFormat f : {QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8, QuantFormat::bf16})
      for (const int64_t m : {int64_t{1}, int64_t{3}}) {
        CAPTURE(name);
        CAPTURE(quant_format_name(f));
        CAPTURE(m);
        const QuantTensor whole = quantize(ref[std::string(name) + ".w"], f, true, cpu_allocator());
        // A row view starting inside an nf4 block where the shape allows (odd widths).
        const QuantTensor q = whole.rows > 3 ? whole.row_slice(1, whole.rows - 1) : whole;
        const Tensor x = random(Shape{m, q.cols}), bias = random(Shape{q.rows});
        Tensor y = Tensor::empty(Shape{m, q.rows}, DType::f32), ref_y = Tensor::empty(Shape{m, q.rows}, DType::f32);
        quant_linear(ctx, x, q, &bias, y);
        matmul(ctx, x, dequantized(q), ref_y, MatmulOptions{.trans_b = true, .bias = &bias});
        double err = 0, norm = 0;
        for (int64_t i = 0; i < y.numel(); ++i) {
          const double d = y.data_as<float>()[i] - ref_y.data_as<float>()[i];
          err += d * d;
          norm += static_cast<double>(ref_y.data_as<float>()[i]) * ref_y.data_as<float>()[i];
        }
        CHECK(std::sqrt(err / norm) < 1e-6);
      }
  const QuantTensor q = quantize(ref["odd.w"], QuantFormat::nf4, true, cpu_allocator());
  const Tensor x = Tensor::zeros(Shape{kQuantLinearMaxRows + 1, q.cols}, DType::f32);
  Tensor y = Tensor::empty(Shape{kQuantLinearMaxRows + 1, q.rows}, DType::f32);
  CHECK_THROWS_WITH_AS(quant_linear(ctx, x, q, nullptr, y), doctest::Contains("1 <= M <= 8"), InvalidArgument);
}

TEST_CASE("quant: malformed parts are refused with what is wrong") {
  const Reference ref;
  const QuantTensor good = quantize(ref["square.w"], QuantFormat::nf4, true, cpu_allocator());
  QuantTensor q = good;
  q.absmax = q.absmax.slice(0, q.absmax.dim(0) - 1);
  CHECK(quant_layout_error(q).find("absmax has 47 elements, expected 48") != std::string::npos);
  q = good;
  q.data = q.data.slice(0, 10);
  CHECK(quant_layout_error(q).find("packed weight has 10 elements") != std::string::npos);
  q = good;
  q.nested_code = Tensor::empty(Shape{255}, DType::f32);
  CHECK(quant_layout_error(q).find("nested_quant_map has 255") != std::string::npos);
  q = good;
  q.code = Tensor::from_floats(Shape{16}, {-1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7});
  CHECK(quant_layout_error(q).find("quant_map[15]") != std::string::npos);
  q = good;
  q.rows = 49;
  CHECK(quant_layout_error(q).find("rows [0, 49) outside the 48 stored") != std::string::npos);
  Context ctx(Device::cpu());
  Tensor out = Tensor::empty(Shape{49, 64}, DType::f32);
  CHECK_THROWS_AS(dequantize(ctx, q, out), InvalidArgument);
}
