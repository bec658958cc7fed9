// Quantized frozen weights, the base of QLoRA: NF4 exactly as bitsandbytes stores it (blocks of
// 64 weights over the flattened tensor, one absmax per block, the 16 NormalFloat values, two
// codes per byte with the first element in the high nibble; optionally the absmax themselves
// quantized, "double quantization": less their mean, in blocks of 256 to the 8-bit dynamic
// code), int8 per output channel (symmetric, absmax per row, as bitsandbytes' LLM.int8 weight),
// and FP8 E4M3 (OCP "fn": max 448, no infinities) per output channel with an fp32 scale. BF16
// is the CPU backend's storage of a frozen base in half the bytes of its f32 compute dtype
// (exact for a bf16 folder: widening back gives the same f32 values).
//
// A QuantTensor is an (out, in) weight in one of these formats; its parts are ordinary tensors
// (safetensors entries, streamed chunks), so a quantized layer moves across PCIe as its
// quantized bytes. Dequantization runs on both backends into the compute dtype; quantization is
// the load path's, on the CPU, one tensor at a time.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

enum class QuantFormat : uint8_t { none, nf4, int8, fp8, bf16 };
std::string_view quant_format_name(QuantFormat f);  // "none", "nf4", "int8", "fp8", "bf16"
std::optional<QuantFormat> parse_quant_format(std::string_view name);

inline constexpr int64_t kNf4Block = 64;         // weights per absmax
inline constexpr int64_t kNf4NestedBlock = 256;  // absmax per nested absmax (double quantization)
inline constexpr int kNf4Codes = 16;
inline constexpr int kDynamicCodes = 256;   // the 8-bit code of the double-quantized absmax
inline constexpr float kInt8Max = 127.0f;
inline constexpr float kFp8E4M3Max = 448.0f;

// The 16 NormalFloat values of QLoRA (the quantiles of N(0, 1) scaled to [-1, 1], with an exact
// zero), in code order.
const std::array<float, kNf4Codes>& nf4_code();
// bitsandbytes' signed dynamic 8-bit code (create_dynamic_map(signed=True)): 256 values in
// [-1, 1], sorted, used for the double-quantized absmax.
const std::array<float, kDynamicCodes>& dynamic_code();
// E4M3 bits <-> float (round to nearest even, saturating at +-448; NaN for 0x7f / 0xff).
float fp8_e4m3_to_f32(uint8_t bits);
uint8_t f32_to_fp8_e4m3(float x);

struct QuantTensor {
  QuantFormat format = QuantFormat::none;
  int64_t rows = 0, cols = 0;  // the (out, in) weight this is
  // A row view of a fused original (Phi-3's qkv_proj) is rows [row0, row0 + rows) of the parts,
  // which stay the original's whole, of stored_rows rows.
  int64_t row0 = 0, stored_rows = 0;
  Tensor data;    // nf4: U8 (ceil(numel / 2)) packed codes; int8: I8 (R, in); fp8: U8 (R, in) E4M3 bits;
                  // bf16: BF16 (R, in)
  Tensor absmax;  // nf4: F32 (blocks), or U8 (blocks) double-quantized; int8, fp8: F32 (R) row absmax
  Tensor code;    // nf4: F32 (16), the quant map
  Tensor nested_absmax;  // double quantization: F32 (ceil(blocks / 256))
  Tensor nested_code;    // double quantization: F32 (256)
  float nested_offset = 0.0f;  // double quantization: added back to each dequantized absmax

  bool defined() const { return format != QuantFormat::none; }
  bool double_quant() const { return nested_absmax.defined(); }
  // Rows [r0, r1) of this weight.
  QuantTensor row_slice(int64_t r0, int64_t r1) const;
  // The parts that are defined, in one fixed order (data, absmax, code, nested_absmax,
  // nested_code); a copy elsewhere rebinds them in the same order with with_parts.
  std::vector<Tensor> parts() const;
  QuantTensor with_parts(const std::vector<Tensor>& parts, size_t& next) const;
  uint64_t nbytes() const;  // the parts' bytes
};

// Blocks of a (rows, cols) nf4 original: ceil(rows * cols / 64).
int64_t nf4_blocks(int64_t numel);
// The bytes of a (rows, cols) weight in `format` as quantize makes it (nf4 double-quantized).
uint64_t quantized_bytes(int64_t rows, int64_t cols, QuantFormat format);
// Why the parts of q do not form a weight of its format and shape (counts, dtypes, sizes of
// every part, nf4's code), or empty when they do. Loaders name the tensor around it.
std::string quant_layout_error(const QuantTensor& q);

// out (rows, cols) in a float dtype of the backend = the dequantized weight. nf4: code[c] *
// absmax[block] in fp32, with double quantization absmax = nested_code[q] * nested_absmax[q
// block] + offset first (bitsandbytes' order of operations); int8: q * (absmax / 127); fp8:
// e4m3(q) * (absmax / 448); bf16: the value; then rounded to out's dtype. The CPU only for bf16.
void dequantize(Context& ctx, const QuantTensor& q, Tensor& out);

// y (M, rows) = x (M, cols) W^T (+ bias (rows)) for a quantized W, reading the quantized bytes
// directly: each output row's weights are dequantized into a local buffer and dotted with every
// row of x (decode: a token reads the weight once, at its quantized size). The CPU only, and
// only for few rows (quant_linear_direct says where); elsewhere the caller dequantizes into a
// scratch for a GEMM (model/block.cpp). F32 x, y and bias.
inline constexpr int64_t kQuantLinearMaxRows = 8;
bool quant_linear_direct(const Context& ctx, int64_t m);
void quant_linear(Context& ctx, const Tensor& x, const QuantTensor& q, const Tensor* bias, Tensor& y);

// w (rows, cols), a float tensor on the CPU, quantized as bitsandbytes does: nf4 with
// double_quant optional (the 4-bit path; absmax mean offset, 256-blocks of the dynamic code);
// int8, fp8 and bf16 (round to nearest even) ignore double_quant. The parts are allocated from `alloc` (host memory).
//
// The double-quantization offset is the absmax mean: fl(sum) / blocks with the sum rounded once.
// torch's fp32 mean (what bitsandbytes stores) sums in an order set by the machine's SIMD width
// and thread count, so its last bit can differ; nested_offset, when given, is used instead
// (re-quantizing to a given file's exact bytes).
QuantTensor quantize(const Tensor& w, QuantFormat format, bool double_quant, Allocator& alloc,
                     std::optional<float> nested_offset = std::nullopt);

}  // namespace onn
