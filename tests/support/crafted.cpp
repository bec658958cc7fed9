// The crafted safetensors cases.
#include "support/crafted.h"

namespace onn::test {

std::vector<uint8_t> safetensors_image(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<uint8_t>(i * 7 + 1));
  return out;
}

namespace {
std::vector<uint8_t> with_length_field(uint64_t n, size_t total) {
  std::vector<uint8_t> out(total, ' ');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  return out;
}
const std::string kW = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
}  // namespace

std::vector<CraftedFile> malformed_safetensors() {
  std::vector<CraftedFile> v;
  auto add = [&](std::string name, std::vector<uint8_t> bytes, std::string expected) {
    v.push_back({std::move(name), std::move(bytes), std::move(expected)});
  };
  auto hdr = [&](std::string name, const std::string& header, size_t data, std::string expected) {
    add(std::move(name), safetensors_image(header, data), std::move(expected));
  };
  add("empty", {}, "shorter than the 8-byte header length");
  add("short", {1, 2, 3, 4, 5}, "shorter than the 8-byte header length");
  add("header_over_limit", with_length_field(100'000'001, 64), "over the 100000000-byte limit");
  add("header_length_max_u64", with_length_field(UINT64_MAX, 64), "over the 100000000-byte limit");
  add("header_past_eof", with_length_field(1000, 40), "runs past the end of the file");
  add("header_past_eof_by_one", with_length_field(33, 40), "runs past the end of the file");
  hdr("not_utf8", "{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "not valid UTF-8");
  hdr("overlong_utf8", "{\"\xc0\xaf\":{}}", 0, "not valid UTF-8");
  hdr("not_json", "{\"w\": {\"dtype\": ", 0, "invalid JSON");
  hdr("json_trailing_garbage", "{} x", 0, "invalid JSON");
  hdr("not_object", "[1, 2, 3]", 0, "header is not a JSON object");
  hdr("duplicate_keys", "{" + kW + "," + kW + "}", 8, "duplicate key \"w\"");
  hdr("duplicate_keys_nested", R"({"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8,
      "duplicate key \"dtype\"");
  hdr("too_deep", "{\"__metadata__\":" + std::string(50, '[') + std::string(50, ']') + "}", 0, "nested deeper");
  hdr("unknown_dtype", R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8, "unknown or unsupported dtype");
  hdr("unsupported_f8", R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1,
      "unknown or unsupported dtype \"F8_E4M3\"");
  hdr("dtype_not_string", R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8, "\"dtype\" is not a string");
  hdr("negative_shape", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "shape[0] is negative");
  hdr("float_shape", R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8, "shape[0] is not an integer");
  hdr("string_shape", R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8,
      "shape[0] is not an integer");
  hdr("shape_not_array", R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8, "\"shape\" is not an array");
  hdr("shape_overflow", R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", 8,
      "element count overflows");
  hdr("shape_bytes_overflow", R"({"w":{"dtype":"I64","shape":[2305843009213693952,2],"data_offsets":[0,8]}})", 8,
      "overflows");
  hdr("shape_too_large_integer", R"({"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]}})", 8,
      "shape[0] is not an integer");
  hdr("size_mismatch", R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 12,
      "shape and dtype give 16 bytes but data_offsets span 12");
  hdr("offsets_reversed", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[8,4]}})", 8, "are reversed");
  hdr("offsets_negative", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[-4,0]}})", 4,
      "data_offsets[0] is not a non-negative integer");
  hdr("offsets_wrong_arity", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0]}})", 4,
      "not an array of two integers");
  hdr("offsets_overlap",
      R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
      12, "overlaps the previous tensor");
  hdr("offsets_duplicate_range",
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
      4, "overlaps the previous tensor");
  hdr("offsets_gap",
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
      12, "gap in the data");
  hdr("offsets_not_from_zero", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8,
      "does not start at offset 0");
  hdr("trailing_bytes", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 9, "5 trailing bytes");
  hdr("trailing_bytes_no_tensors", "{}", 3, "3 trailing bytes");
  hdr("data_past_end", R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", 4, "past its end");
  hdr("entry_not_object", R"({"w":[1,2]})", 0, "entry is not a JSON object");
  hdr("missing_dtype", R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8, "missing \"dtype\"");
  hdr("missing_shape", R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8, "missing \"shape\"");
  hdr("missing_offsets", R"({"w":{"dtype":"F32","shape":[2]}})", 8, "missing \"data_offsets\"");
  hdr("metadata_not_object", R"({"__metadata__":["a","b"]})", 0, "__metadata__ is not an object");
  hdr("metadata_not_strings", R"({"__metadata__":{"format":1}})", 0, "value for \"format\" is not a string");
  hdr("metadata_nested", R"({"__metadata__":{"format":{"a":"b"}}})", 0, "value for \"format\" is not a string");
  return v;
}

std::vector<CraftedFile> valid_safetensors() {
  std::vector<CraftedFile> v;
  v.push_back({"no_tensors", safetensors_image("{}", 0), ""});
  v.push_back({"metadata_only", safetensors_image(R"({"__metadata__":{"format":"pt"}})", 0), ""});
  v.push_back({"zero_size_tensors",
               safetensors_image(R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)"
                                 R"("f":{"dtype":"BF16","shape":[0],"data_offsets":[0,0]},)"
                                 R"("s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})",
                                 8),
               ""});
  v.push_back({"padded_header", safetensors_image("{" + kW + "}      ", 8), ""});
  v.push_back({"unordered_entries",
               safetensors_image(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},)"
                                 R"("a":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}})",
                                 8),
               ""});
  return v;
}

}  // namespace onn::test
