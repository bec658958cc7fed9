// Strict JSON parsing over nlohmann::json's callback parser.
#include "runtime/json.h"

#include <set>
#include <vector>

#include "runtime/error.h"
#include "runtime/file_util.h"

namespace onn {

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1fu; min = 0x80; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0fu; min = 0x800; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07u; min = 0x10000; }
    else return i;
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += len;
  }
  return std::string_view::npos;
}

nlohmann::json parse_json_strict(std::string_view text, const std::string& source, int max_depth) {
  const size_t bad = find_invalid_utf8(text);
  if (bad != std::string_view::npos) {
    throw FormatError(source + ": not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string error;
  auto cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) -> bool {
    using E = nlohmann::json::parse_event_t;
    if ((ev == E::object_start || ev == E::array_start) && depth >= max_depth) {
      throw FormatError(source + ": JSON nested deeper than " + std::to_string(max_depth) + " levels");
    }
    if (ev == E::object_start) keys.emplace_back();
    if (ev == E::object_end && !keys.empty()) keys.pop_back();
    if (ev == E::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second) {
        throw FormatError(source + ": duplicate key \"" + k + "\"");
      }
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true,
                                 /*ignore_comments=*/false);
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    const auto pos = what.find("parse error");
    throw FormatError(source + ": invalid JSON at byte " + std::to_string(e.byte) + ": " +
                      (pos == std::string::npos ? what : what.substr(pos)));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(source + ": invalid JSON: " + e.what());
  }
}

nlohmann::json read_json_file(const std::string& path, size_t max_bytes, int max_depth) {
  const std::string text = read_file(path, max_bytes);
  return parse_json_strict(text, path, max_depth);
}

}  // namespace onn
