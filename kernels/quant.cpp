// Quantized weights: the formats' constants, layout checks, the CPU quantizer (the load path)
// and dequantize's checked front.
#include "kernels/quant.h"

#include "kernels/elementwise.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "kernels/backends.h"
#include "kernels/op_check.h"
#include "kernels/quant_math.h"
#include "runtime/error.h"
#include "runtime/parallel.h"

namespace onn {

std::string_view quant_format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::none: return "none";
    case QuantFormat::nf4: return "nf4";
    case QuantFormat::int8: return "int8";
    case QuantFormat::fp8: return "fp8";
    case QuantFormat::bf16: return "bf16";
  }
  return "?";
}

std::optional<QuantFormat> parse_quant_format(std::string_view name) {
  for (QuantFormat f : {QuantFormat::none, QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8, QuantFormat::bf16})
    if (name == quant_format_name(f)) return f;
  return std::nullopt;
}

const std::array<float, kNf4Codes>& nf4_code() {
  // QLoRA's NormalFloat4 (Dettmers et al. 2023, appendix E), as bitsandbytes defines it.
  static const std::array<float, kNf4Codes> code = {
      -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
      -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
      0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
      0.7229568362236023f, 1.0f};
  return code;
}

namespace {

// torch.linspace(start, end, steps) in fp32 as its CPU kernel computes it: the first half up
// from start, the second half down from end, each value one fused multiply-add.
std::vector<float> linspace_f32(float start, float end, int steps) {
  const float step = (end - start) / static_cast<float>(steps - 1);
  std::vector<float> v(static_cast<size_t>(steps));
  for (int i = 0; i < steps; ++i)
    v[static_cast<size_t>(i)] = i < steps / 2 ? std::fma(step, static_cast<float>(i), start)
                                              : std::fma(-step, static_cast<float>(steps - i - 1), end);
  return v;
}

// The midpoints between consecutive entries of a sorted code, as bitsandbytes computes them
// (fp32 sum, halved).
template <size_t N>
std::array<float, N - 1> midpoints(const std::array<float, N>& code) {
  std::array<float, N - 1> m{};
  for (size_t i = 0; i + 1 < N; ++i) m[i] = (code[i] + code[i + 1]) / 2.0f;
  return m;
}

// Nearest entry of the code: the count of midpoints below x, so a tie goes down
// (torch.bucketize over the midpoints, bitsandbytes' default kernel). A branchless binary search.
template <size_t M>
uint8_t nearest_code(const std::array<float, M>& mids, float x) {
  size_t pos = 0;  // midpoints known to be below x
  for (size_t step = std::bit_floor(M); step > 0; step >>= 1)
    pos = pos + step <= M && mids[pos + step - 1] < x ? pos + step : pos;
  return static_cast<uint8_t>(pos);
}

}  // namespace

const std::array<float, kDynamicCodes>& dynamic_code() {
  // bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each
  // exponent i in 0..6, 2^i fraction means of linspace(0.1, 1) scaled by 10^(i-6), with both
  // signs; then 0 and 1; sorted.
  static const std::array<float, kDynamicCodes> code = [] {
    constexpr int kExponents = 7;
    std::vector<float> data;
    for (int i = 0; i < kExponents; ++i) {
      const std::vector<float> b = linspace_f32(0.1f, 1.0f, (1 << i) + 1);
      const float decade = static_cast<float>(std::pow(10.0, i - (kExponents - 1)));
      for (int sign : {1, -1})
        for (size_t j = 0; j + 1 < b.size(); ++j) {
          const float mean = (b[j] + b[j + 1]) / 2.0f;
          data.push_back(static_cast<float>(sign) * decade * mean);
        }
    }
    data.push_back(0.0f);
    data.push_back(1.0f);
    std::sort(data.begin(), data.end());
    std::array<float, kDynamicCodes> out{};
    std::copy(data.begin(), data.end(), out.begin());
    return out;
  }();
  return code;
}

float fp8_e4m3_to_f32(uint8_t bits) { return quant_math::fp8_e4m3_value(bits); }

uint8_t f32_to_fp8_e4m3(float x) {
  // The 127 non-negative finite values in increasing order are codes 0..126; the midpoints
  // between neighbours are exact in fp32 (the values have at most 4 significant bits). The
  // nearest value, a tie to the even code (the even mantissa), saturating at 448.
  static const std::array<float, 126> mids = [] {
    std::array<float, 126> m{};
    for (int c = 0; c < 126; ++c)
      m[static_cast<size_t>(c)] = (quant_math::fp8_e4m3_value(static_cast<uint8_t>(c)) +
                                   quant_math::fp8_e4m3_value(static_cast<uint8_t>(c + 1))) / 2.0f;
    return m;
  }();
  if (std::isnan(x)) return 0x7f;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::fabs(x);
  size_t code = nearest_code(mids, a);                           // a tie goes down here ...
  if (code < mids.size() && mids[code] == a && code % 2 == 1) ++code;  // ... and to the even code in E4M3
  return static_cast<uint8_t>(sign | code);
}

int64_t nf4_blocks(int64_t numel) { return (numel + kNf4Block - 1) / kNf4Block; }

uint64_t quantized_bytes(int64_t rows, int64_t cols, QuantFormat format) {
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
  switch (format) {
    case QuantFormat::none: return n * 4;
    case QuantFormat::nf4: {
      const uint64_t blocks = static_cast<uint64_t>(nf4_blocks(static_cast<int64_t>(n)));
      const uint64_t nested = (blocks + kNf4NestedBlock - 1) / kNf4NestedBlock;
      return (n + 1) / 2 + blocks + nested * 4 + (kDynamicCodes + kNf4Codes) * 4;
    }
    case QuantFormat::int8:
    case QuantFormat::fp8: return n + static_cast<uint64_t>(rows) * 4;
    case QuantFormat::bf16: return n * 2;
  }
  return 0;
}

QuantTensor QuantTensor::row_slice(int64_t r0, int64_t r1) const {
  ONN_CHECK_ARG(0 <= r0 && r0 <= r1 && r1 <= rows, "quantized row slice [", r0, ", ", r1, ") of ", rows, " rows");
  QuantTensor q = *this;
  q.row0 = row0 + r0;
  q.rows = r1 - r0;
  return q;
}

std::vector<Tensor> QuantTensor::parts() const {
  std::vector<Tensor> p;
  for (const Tensor* t : {&data, &absmax, &code, &nested_absmax, &nested_code})
    if (t->defined()) p.push_back(*t);
  return p;
}

QuantTensor QuantTensor::with_parts(const std::vector<Tensor>& parts, size_t& next) const {
  QuantTensor q = *this;
  for (Tensor* t : {&q.data, &q.absmax, &q.code, &q.nested_absmax, &q.nested_code})
    if (t->defined()) *t = parts.at(next++);
  return q;
}

uint64_t QuantTensor::nbytes() const {
  uint64_t n = 0;
  for (const Tensor& t : parts()) n += t.nbytes();
  return n;
}

namespace {

std::string expect(const Tensor& t, const char* part, DType dtype, int64_t numel) {
  if (!t.defined()) return std::string(part) + " is missing";
  if (t.dtype() != dtype)
    return std::string(part) + " has dtype " + std::string(dtype_name(t.dtype())) + ", expected " +
           std::string(dtype_name(dtype));
  if (t.numel() != numel)
    return std::string(part) + " has " + std::to_string(t.numel()) + " elements, expected " + std::to_string(numel);
  return "";
}

std::string nf4_layout_error(const QuantTensor& q, int64_t numel) {
  const int64_t blocks = nf4_blocks(numel);
  std::string e = expect(q.data, "the packed weight", DType::u8, (numel + 1) / 2);
  if (e.empty()) e = expect(q.code, "quant_map", DType::f32, kNf4Codes);
  if (e.empty() && q.code.device().is_cpu()) {
    const float* c = q.code.data_as<float>();
    for (int i = 0; i < kNf4Codes; ++i)
      if (!std::isfinite(c[i]) || std::fabs(c[i]) > 1.0f)
        return "quant_map[" + std::to_string(i) + "] = " + std::to_string(c[i]) + " is outside [-1, 1]";
  }
  if (!e.empty()) return e;
  if (!q.double_quant()) return expect(q.absmax, "absmax", DType::f32, blocks);
  e = expect(q.absmax, "absmax", DType::u8, blocks);
  if (e.empty()) e = expect(q.nested_absmax, "nested_absmax", DType::f32, (blocks + kNf4NestedBlock - 1) / kNf4NestedBlock);
  if (e.empty()) e = expect(q.nested_code, "nested_quant_map", DType::f32, kDynamicCodes);
  if (e.empty() && !std::isfinite(q.nested_offset)) e = "nested_offset is not finite";
  return e;
}

}  // namespace

std::string quant_layout_error(const QuantTensor& q) {
  if (q.rows < 0 || q.cols < 0 || q.row0 < 0) return "negative shape";
  if (q.row0 > q.stored_rows || q.rows > q.stored_rows - q.row0)
    return "rows [" + std::to_string(q.row0) + ", " + std::to_string(q.row0 + q.rows) + ") outside the " +
           std::to_string(q.stored_rows) + " stored";
  if (q.cols > 0 && q.stored_rows > INT64_MAX / q.cols) return "shape overflows";
  const int64_t total_rows = q.stored_rows;
  switch (q.format) {
    case QuantFormat::none: return "not quantized";
    case QuantFormat::nf4: return nf4_layout_error(q, total_rows * q.cols);
    case QuantFormat::int8:
    case QuantFormat::fp8: {
      std::string e = expect(q.data, "the weight", q.format == QuantFormat::int8 ? DType::i8 : DType::u8,
                             total_rows * q.cols);
      return e.empty() ? expect(q.absmax, "the row absmax", DType::f32, total_rows) : e;
    }
    case QuantFormat::bf16: return expect(q.data, "the weight", DType::bf16, total_rows * q.cols);
  }
  return "unknown format";
}

void dequantize(Context& ctx, const QuantTensor& q, Tensor& out) {
  const OpCheck chk("dequantize", ctx, {{"out", &out}});
  const std::string layout = quant_layout_error(q);
  chk.require(layout.empty(), quant_format_name(q.format), " weight: ", layout);
  for (const Tensor& t : q.parts())
    chk.require(t.device() == ctx.device() || chk.rehearsal(), "the quantized parts must be on ", ctx.device().str());
  chk.shape(out, "out", Shape{q.rows, q.cols});
  chk.float_dtype(out, "out");
  chk.require(chk.cpu() || q.format != QuantFormat::bf16, "bf16 storage is the CPU backend's (CUDA computes in bf16)");
  ONN_DISPATCH(chk, dequantize_cpu(q, out), dequantize_cuda(ctx, q, out));
}

bool quant_linear_direct(const Context& ctx, int64_t m) {
  return ctx.device().is_cpu() && m >= 1 && m <= kQuantLinearMaxRows;
}

void quant_linear(Context& ctx, const Tensor& x, const QuantTensor& q, const Tensor* bias, Tensor& y) {
  const OpCheck chk("quant_linear", ctx, {{"x", &x}, {"y", &y}, {"bias", bias}});
  const std::string layout = quant_layout_error(q);
  chk.require(layout.empty(), quant_format_name(q.format), " weight: ", layout);
  chk.require(quant_linear_direct(ctx, x.rank() == 2 ? x.dim(0) : 0), "x must be (M, ", q.cols, ") with 1 <= M <= ",
              kQuantLinearMaxRows, ", on the CPU (elsewhere dequantize and use a GEMM)");
  chk.shape(x, "x", Shape{x.dim(0), q.cols});
  chk.dtype(x, "x", DType::f32);
  chk.shape(y, "y", Shape{x.dim(0), q.rows});
  chk.dtype(y, "y", DType::f32);
  if (bias != nullptr) {
    chk.shape(*bias, "bias", Shape{q.rows});
    chk.dtype(*bias, "bias", DType::f32);
  }
  quant_linear_cpu(x, q, bias, y);
}

namespace {

// nearest_code for every value of a block at once: the midpoints outer, the values inner, so the
// compares vectorise.
template <size_t M>
void nearest_codes(const std::array<float, M>& mids, const float* x, int64_t n, uint8_t* q) {
  constexpr int64_t kChunk = 64;
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t len = std::min(kChunk, n - i0);
    uint8_t count[kChunk] = {};
    for (size_t k = 0; k < M; ++k)
      for (int64_t i = 0; i < len; ++i) count[i] = static_cast<uint8_t>(count[i] + (x[i0 + i] > mids[k] ? 1 : 0));
    std::copy(count, count + len, q + i0);
  }
}

float clamp_unit(float x) { return std::min(1.0f, std::max(-1.0f, x)); }

// Blockwise absmax quantization of flat x into codes: per block its absmax (floored at 1e-38,
// bitsandbytes' clamp), then x * (1 / absmax) for full blocks and x / absmax for the tail
// (as bitsandbytes computes each), clamped to [-1, 1], to the nearest code.
template <size_t N>
void quantize_blocks(const float* x, int64_t n, int64_t block, const std::array<float, N>& code, uint8_t* q,
                     float* absmax) {
  constexpr float kFloor = 1e-38f;
  constexpr int64_t kBlocksPerPart = 4096;
  const std::array<float, N - 1> mids = midpoints(code);
  constexpr size_t kLinearSearch = 16;  // codes up to this size: every midpoint compared (nf4)
  parallel_for((n + block - 1) / block, kBlocksPerPart, [&](int64_t, int64_t first, int64_t last) {
    std::vector<float> scaled;
    for (int64_t bi = first; bi < last; ++bi) {
      const int64_t b0 = bi * block, len = std::min(block, n - b0);
      float m = 0.0f;
      for (int64_t i = 0; i < len; ++i) m = std::max(m, std::fabs(x[b0 + i]));
      absmax[bi] = m;
      const float am = std::max(m, kFloor), inv = 1.0f / am;
      const bool tail = len < block;
      scaled.resize(static_cast<size_t>(len));
      for (int64_t i = 0; i < len; ++i) scaled[static_cast<size_t>(i)] = clamp_unit(tail ? x[b0 + i] / am : x[b0 + i] * inv);
      if (N <= kLinearSearch)
        nearest_codes(mids, scaled.data(), len, q + b0);
      else
        for (int64_t i = 0; i < len; ++i) q[b0 + i] = nearest_code(mids, scaled[static_cast<size_t>(i)]);
    }
  });
}

QuantTensor quantize_nf4(const float* w, int64_t rows, int64_t cols, bool double_quant, Allocator& alloc,
                         std::optional<float> offset) {
  const int64_t n = rows * cols, blocks = nf4_blocks(n);
  QuantTensor q;
  q.format = QuantFormat::nf4;
  q.rows = q.stored_rows = rows;
  q.cols = cols;
  std::vector<uint8_t> codes(static_cast<size_t>(n + 1), 0);
  std::vector<float> absmax(static_cast<size_t>(blocks));
  quantize_blocks(w, n, kNf4Block, nf4_code(), codes.data(), absmax.data());
  if (n % 2) codes[static_cast<size_t>(n)] = nearest_code(midpoints(nf4_code()), 0.0f);  // the pad element
  q.data = Tensor::empty(Shape{(n + 1) / 2}, DType::u8, alloc);
  uint8_t* packed = q.data.data_as<uint8_t>();
  for (int64_t i = 0; i < (n + 1) / 2; ++i)
    packed[i] = static_cast<uint8_t>(codes[static_cast<size_t>(2 * i)] << 4 | codes[static_cast<size_t>(2 * i + 1)]);
  q.code = Tensor::empty(Shape{kNf4Codes}, DType::f32, alloc);
  std::copy(nf4_code().begin(), nf4_code().end(), q.code.data_as<float>());
  if (!double_quant) {
    q.absmax = Tensor::empty(Shape{blocks}, DType::f32, alloc);
    std::copy(absmax.begin(), absmax.end(), q.absmax.data_as<float>());
    return q;
  }
  // Double quantization: the absmax less their mean, blockwise to the dynamic 8-bit code.
  // The mean: the fp32 sum (rounded once from a double sum) divided in fp32 by the count.
  double sum = 0.0;
  for (float a : absmax) sum += a;
  q.nested_offset = offset ? *offset : blocks > 0 ? static_cast<float>(sum) / static_cast<float>(blocks) : 0.0f;
  for (float& a : absmax) a -= q.nested_offset;
  const int64_t nested = (blocks + kNf4NestedBlock - 1) / kNf4NestedBlock;
  q.absmax = Tensor::empty(Shape{blocks}, DType::u8, alloc);
  q.nested_absmax = Tensor::empty(Shape{nested}, DType::f32, alloc);
  quantize_blocks(absmax.data(), blocks, kNf4NestedBlock, dynamic_code(), q.absmax.data_as<uint8_t>(),
                  q.nested_absmax.data_as<float>());
  q.nested_code = Tensor::empty(Shape{kDynamicCodes}, DType::f32, alloc);
  std::copy(dynamic_code().begin(), dynamic_code().end(), q.nested_code.data_as<float>());
  return q;
}

// One row: its absmax, then int8 as bitsandbytes' int8_vectorwise_quant (round(w * (127 /
// absmax)), half to even) or E4M3 of w / (absmax / 448).
void quantize_row(const float* row, int64_t cols, QuantFormat format, float& absmax, void* out) {
  float m = 0.0f;
  for (int64_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(row[c]));
  absmax = m;
  if (format == QuantFormat::int8) {
    const float mul = m > 0.0f ? kInt8Max / m : 0.0f;
    auto* o = static_cast<int8_t*>(out);
    for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<int8_t>(std::clamp(std::nearbyint(row[c] * mul), -kInt8Max, kInt8Max));
    return;
  }
  const float scale = quant_math::row_scale(m, kFp8E4M3Max);
  auto* o = static_cast<uint8_t*>(out);
  for (int64_t c = 0; c < cols; ++c) o[c] = f32_to_fp8_e4m3(scale > 0.0f ? row[c] / scale : 0.0f);
}

QuantTensor quantize_rows(const float* w, int64_t rows, int64_t cols, QuantFormat format, Allocator& alloc) {
  QuantTensor q;
  q.format = format;
  q.rows = q.stored_rows = rows;
  q.cols = cols;
  q.data = Tensor::empty(Shape{rows, cols}, format == QuantFormat::int8 ? DType::i8 : DType::u8, alloc);
  q.absmax = Tensor::empty(Shape{rows}, DType::f32, alloc);
  float* am = q.absmax.data_as<float>();
  auto* data = static_cast<uint8_t*>(q.data.data());  // one byte per element in both formats
  constexpr int64_t kRowsPerPart = 64;
  parallel_for(rows, kRowsPerPart, [&](int64_t, int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) quantize_row(w + r * cols, cols, format, am[r], data + r * cols);
  });
  return q;
}

QuantTensor store_bf16(const Tensor& w, Allocator& alloc) {
  QuantTensor q;
  q.format = QuantFormat::bf16;
  q.rows = q.stored_rows = w.dim(0);
  q.cols = w.dim(1);
  q.data = Tensor::empty(w.shape(), DType::bf16, alloc);
  Context ctx(Device::cpu());
  cast(ctx, w, q.data);
  return q;
}

}  // namespace

QuantTensor quantize(const Tensor& w, QuantFormat format, bool double_quant, Allocator& alloc,
                     std::optional<float> nested_offset) {
  ONN_CHECK_ARG(w.device().is_cpu() && w.rank() == 2 && dtype_is_float(w.dtype()),
                "quantize: the weight must be a 2-D float tensor on the CPU, got ", describe(w));
  ONN_CHECK_ARG(format != QuantFormat::none, "quantize: no format given");
  const Tensor f = w.dtype() == DType::f32 ? w : w.to_dtype(DType::f32);
  const float* x = f.data_as<float>();
  const int64_t n = f.numel();
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) throw InvalidArgument("quantize: element " + std::to_string(i) + " of the weight is not finite");
  if (format == QuantFormat::nf4) return quantize_nf4(x, w.dim(0), w.dim(1), double_quant, alloc, nested_offset);
  if (format == QuantFormat::bf16) return store_bf16(f, alloc);
  return quantize_rows(x, w.dim(0), w.dim(1), format, alloc);
}

}  // namespace onn
