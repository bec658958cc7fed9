// Quantized projection weights in Hugging Face folders, in bitsandbytes' 4-bit layout (what
// transformers' save_pretrained writes for a BitsAndBytesConfig(load_in_4bit) model, the
// "-bnb-4bit" folders users download). For a weight NAME ("model.layers.0.mlp.up_proj.weight"):
//   NAME                                   U8, the packed codes ((numel + 1) / 2, 1)
//   NAME.absmax                            F32 (blocks), or U8 (blocks) with double quantization
//   NAME.quant_map                         F32 (16)
//   NAME.nested_absmax, .nested_quant_map  F32 (ceil(blocks / 256)), F32 (256): double quantization
//   NAME.quant_state.bitsandbytes__nf4     U8: JSON {"quant_type": "nf4", "blocksize": 64,
//       "dtype": "bfloat16", "shape": [out, in], and with double quantization "nested_blocksize":
//       256, "nested_dtype": "float32", "nested_offset": x}
// Every part is checked against the shape config.json implies and against the JSON.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kernels/quant.h"
#include "runtime/safetensors.h"

namespace onn {

inline constexpr const char* kBnbNf4StateSuffix = ".quant_state.bitsandbytes__nf4";
inline constexpr size_t kMaxQuantStateBytes = 64 * 1024;

// Whether `name` is stored in the 4-bit layout (its .absmax entry exists).
bool has_bnb_nf4(const SafetensorsModel& st, const std::string& name);
// The weight `name` of (out, in) `shape`, its parts views of the mapped file (CPU). A FormatError
// names the file, the tensor and what is wrong (a part missing or of the wrong size or dtype, a
// quant_state that is not JSON or disagrees with the parts, a block size or type ONN does not
// implement).
// `original`, when given, receives the dtype the quant_state records for the weight before
// quantization.
QuantTensor read_bnb_nf4(const SafetensorsModel& st, const std::string& name, const Shape& shape,
                         DType* original = nullptr);
// Every weight of `st` stored in the 4-bit layout: its name, its (out, in) shape as its
// quant_state records it, and the bytes of all its entries; each one checked as read_bnb_nf4
// checks it (a FormatError names the tensor).
struct Nf4Weight {
  std::string name;
  Shape shape;
  uint64_t bytes = 0;
};
std::vector<Nf4Weight> bnb_nf4_weights(const SafetensorsModel& st);
// Whether `name` is one of the entries a quantized weight adds beside itself (".absmax", ...).
bool is_bnb_nf4_part(const SafetensorsModel& st, const std::string& name);
// The entries of q (nf4, on the CPU) under `name` in that layout; `dtype` is the original's, as
// the quant_state records it. The JSON entry's bytes are owned by the returned tensor.
std::vector<std::pair<std::string, Tensor>> bnb_nf4_entries(const std::string& name, const QuantTensor& q,
                                                            DType dtype);
// The quant_state JSON of q, as bitsandbytes writes it.
std::string bnb_nf4_state_json(const QuantTensor& q, DType dtype);

// onn-quantize: `model_dir` (an unquantized folder) written to `out_dir` with every projection
// weight in bitsandbytes' nf4 layout (double quantization on, as QLoRA), the other tensors as
// they are, config.json with the quantization_config transformers writes: a folder transformers
// + bitsandbytes and every ONN tool load. One dense and one quantized tensor in memory at a time;
// the output appears whole or not at all. Each quant_state JSON is padded with spaces to a fixed
// size (the header is written before the tensors are quantized).
struct QuantizeResult {
  int64_t tensors = 0, quantized = 0;
  uint64_t bytes_in = 0, bytes_out = 0;  // the weight files
  std::vector<std::string> files;
};
QuantizeResult quantize_folder(const std::string& model_dir, const std::string& out_dir, QuantFormat format,
                               uint64_t max_shard_bytes);
inline constexpr size_t kQuantStateFileBytes = 256;

}  // namespace onn
