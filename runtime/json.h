// JSON from untrusted files: UTF-8 is checked first (error names the byte offset), nesting
// depth is bounded, and duplicate object keys are refused (nlohmann would keep the last).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace onn {

// Offset of the first byte that is not part of valid UTF-8 (overlong forms, surrogates and
// code points above U+10FFFF are invalid), or npos when all of `text` is valid.
size_t find_invalid_utf8(std::string_view text);

// Throws FormatError("<source>: <reason>") on any defect. `source` names the file (and the
// part of it, e.g. "model.safetensors: header").
nlohmann::json parse_json_strict(std::string_view text, const std::string& source, int max_depth = 64);

// The most a small configuration file (config.json, adapter_config.json) may hold.
inline constexpr size_t kMaxConfigFileBytes = size_t{1} << 20;

// Reads and parses a JSON file (at most max_bytes); errors name the path.
nlohmann::json read_json_file(const std::string& path, size_t max_bytes = size_t{64} << 20, int max_depth = 64);

}  // namespace onn
