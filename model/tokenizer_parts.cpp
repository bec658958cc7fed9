// tokenizer.json pieces: NFC/NFKC (utf8proc), Prepend, Replace, Lowercase and Sequence
// normalizers; Split (PCRE2 with Unicode properties), ByteLevel, Digits, Metaspace and
// Sequence pre-tokenizers; the BPE model (merges as "a b" or [a, b], byte_fallback, unk with
// fuse_unk, ignore_merges); ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace and
// Sequence decoders.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/tokenizer_parts.h"

#include <pcre2.h>
#include <utf8proc.h>

#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

namespace onn::tok {

void fail(const std::string& where, const std::string& why) { throw FormatError(where + ": " + why); }

size_t char_len(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  return i + n <= s.size() ? n : 1;
}

namespace {

using nlohmann::json;

const json& field(const json& j, const char* name, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end()) fail(where, std::string("missing \"") + name + "\"");
  return *it;
}
std::string str_field(const json& j, const char* name, const std::string& where) {
  const json& v = field(j, name, where);
  if (!v.is_string()) fail(where, std::string("\"") + name + "\" must be a string");
  return v.get<std::string>();
}
bool bool_field(const json& j, const char* name, bool fallback, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(where, std::string("\"") + name + "\" must be true or false");
  return it->get<bool>();
}

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &off, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail(where, "regex does not compile at offset " + std::to_string(off) + ": " + reinterpret_cast<char*>(msg));
    }
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ~Regex() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches, left to right, as (begin, end) byte offsets.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
    size_t pos = 0;
    while (pos <= s.size()) {
      // Invalid UTF-8 never reaches here (inputs are repaired first); NO_UTF_CHECK skips the
      // per-call rescan of the subject.
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, PCRE2_NO_UTF_CHECK,
                                 data_, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data_);
      const size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty match: step over one character
        if (b >= s.size()) break;
        pos = b + char_len(s, b);
        continue;
      }
      out.emplace_back(b, e);
      pos = e;
    }
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

// A pattern object: {"String": "..."} or {"Regex": "..."}; a literal is escaped into a regex.
std::unique_ptr<Regex> pattern_of(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "pattern must be an object");
  if (j.contains("Regex")) return std::make_unique<Regex>(j.at("Regex").get<std::string>(), where);
  if (j.contains("String")) return std::make_unique<Regex>("\\Q" + j.at("String").get<std::string>() + "\\E", where);
  fail(where, "pattern must hold \"String\" or \"Regex\"");
}

// --- normalizers ---------------------------------------------------------------------

struct Sequence final : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> parts;
  void apply(std::string& s) const override {
    for (const auto& p : parts) p->apply(s);
  }
};

struct UnicodeNorm final : Normalizer {
  bool compat;
  explicit UnicodeNorm(bool k) : compat(k) {}
  void apply(std::string& s) const override {
    if (s.empty()) return;
    const auto opts = static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | (compat ? UTF8PROC_COMPAT : 0));
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()), &out, opts);
    if (n < 0) return;  // only on invalid UTF-8, which inputs never are
    s.assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
    std::free(out);
  }
};

struct Prepend final : Normalizer {
  std::string prefix;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix);
  }
};

// Every match of `re` in s replaced by `content`.
void replace_all(const Regex& re, const std::string& content, std::string& s) {
  std::string out;
  size_t last = 0;
  for (const auto& [b, e] : re.find_all(s)) {
    out.append(s, last, b - last);
    out += content;
    last = e;
  }
  out.append(s, last, std::string::npos);
  s = std::move(out);
}

struct Replace final : Normalizer {
  std::unique_ptr<Regex> pattern;
  std::string content;
  void apply(std::string& s) const override { replace_all(*pattern, content, s); }
};

struct Lowercase final : Normalizer {
  void apply(std::string& s) const override {
    std::string out;
    for (size_t i = 0; i < s.size();) {
      utf8proc_int32_t cp = 0;
      const utf8proc_ssize_t n =
          utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i), static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
      if (n <= 0) {
        out += s[i++];
        continue;
      }
      utf8proc_uint8_t buf[4];
      const utf8proc_ssize_t m = utf8proc_encode_char(utf8proc_tolower(cp), buf);
      out.append(reinterpret_cast<char*>(buf), static_cast<size_t>(m));
      i += static_cast<size_t>(n);
    }
    s = std::move(out);
  }
};

// --- pre-tokenizers --------------------------------------------------------------------

struct PreSequence final : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void apply(std::vector<Piece>& p) const override {
    for (const auto& x : parts) x->apply(p);
  }
};

enum class Behavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };

// Splits every piece at the matches of `re`, by `behavior`.
void split_pieces(std::vector<Piece>& pieces, const Regex& re, Behavior behavior) {
  std::vector<Piece> out;
  for (const Piece& p : pieces) {
    const std::string& s = p.text;
    std::vector<std::pair<std::string, bool>> parts;  // (text, is_match)
    size_t last = 0;
    for (const auto& [b, e] : re.find_all(s)) {
      if (b > last) parts.emplace_back(s.substr(last, b - last), false);
      parts.emplace_back(s.substr(b, e - b), true);
      last = e;
    }
    if (last < s.size()) parts.emplace_back(s.substr(last), false);
    std::vector<std::string> texts;
    for (size_t i = 0; i < parts.size(); ++i) {
      const auto& [t, m] = parts[i];
      switch (behavior) {
        case Behavior::isolated: texts.push_back(t); break;
        case Behavior::removed:
          if (!m) texts.push_back(t);
          break;
        case Behavior::merged_with_previous:
          if (m && !texts.empty() && !parts[i - 1].second) texts.back() += t;
          else texts.push_back(t);
          break;
        case Behavior::merged_with_next:
          if (!m && i > 0 && parts[i - 1].second) texts.back() += t;
          else texts.push_back(t);
          break;
        case Behavior::contiguous:
          if (m && i > 0 && parts[i - 1].second) texts.back() += t;
          else texts.push_back(t);
          break;
      }
    }
    for (size_t i = 0; i < texts.size(); ++i) out.push_back({std::move(texts[i]), p.first && i == 0});
  }
  pieces = std::move(out);
}

Behavior behavior_of(const json& j, const std::string& where) {
  const std::string b = str_field(j, "behavior", where);
  if (b == "Isolated") return Behavior::isolated;
  if (b == "Removed") return Behavior::removed;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  if (b == "Contiguous") return Behavior::contiguous;
  fail(where, "unknown split behavior \"" + b + "\"");
}

struct Split final : PreTokenizer {
  std::unique_ptr<Regex> re;
  Behavior behavior;
  void apply(std::vector<Piece>& p) const override { split_pieces(p, *re, behavior); }
};

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteLevel final : PreTokenizer {
  bool add_prefix_space = false;
  std::unique_ptr<Regex> re;  // GPT-2's split when use_regex
  void apply(std::vector<Piece>& pieces) const override {
    if (add_prefix_space)  // every piece, as tokenizers does for each split it is given
      for (Piece& p : pieces)
        if (!p.text.empty() && p.text[0] != ' ') p.text.insert(0, " ");
    if (re) split_pieces(pieces, *re, Behavior::isolated);
    for (Piece& p : pieces) p.text = byte_level_encode(p.text);
  }
};

struct Digits final : PreTokenizer {
  std::unique_ptr<Regex> re;
  void apply(std::vector<Piece>& p) const override { split_pieces(p, *re, Behavior::isolated); }
};

struct Metaspace final : PreTokenizer {
  std::string replacement;
  std::string scheme;  // always, first, never
  bool split = true;
  std::unique_ptr<Regex> re;
  void apply(std::vector<Piece>& pieces) const override {
    for (Piece& p : pieces) {
      std::string t;
      for (char c : p.text) {
        if (c == ' ')
          t += replacement;
        else
          t += c;
      }
      const bool prepend = scheme == "always" || (scheme == "first" && p.first);
      if (prepend && t.rfind(replacement, 0) != 0) t.insert(0, replacement);
      p.text = std::move(t);
    }
    if (split) split_pieces(pieces, *re, Behavior::merged_with_next);
  }
};

// --- decoders --------------------------------------------------------------------------

struct DecSequence final : Decoder {
  std::vector<std::unique_ptr<Decoder>> parts;
  void apply(std::vector<std::string>& t) const override {
    for (const auto& p : parts) p->apply(t);
  }
};

struct DecByteLevel final : Decoder {
  void apply(std::vector<std::string>& t) const override {
    std::string out;
    for (const std::string& s : t) byte_level_decode(s, out);
    t.assign(1, std::move(out));
  }
};

struct DecReplace final : Decoder {
  std::unique_ptr<Regex> pattern;
  std::string content;
  void apply(std::vector<std::string>& t) const override {
    for (std::string& s : t) replace_all(*pattern, content, s);
  }
};

// "<0xAB>" tokens become the byte 0xAB.
struct DecByteFallback final : Decoder {
  void apply(std::vector<std::string>& t) const override {
    for (std::string& s : t) {
      if (s.size() == 6 && s.rfind("<0x", 0) == 0 && s[5] == '>') {
        const std::string hex = s.substr(3, 2);
        char* end = nullptr;
        const long v = std::strtol(hex.c_str(), &end, 16);
        if (end == hex.c_str() + 2) s.assign(1, static_cast<char>(v));
      }
    }
  }
};

struct DecFuse final : Decoder {
  void apply(std::vector<std::string>& t) const override {
    std::string out;
    for (const std::string& s : t) out += s;
    t.assign(1, std::move(out));
  }
};

struct DecStrip final : Decoder {
  std::string content;
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& t) const override {
    for (std::string& s : t) {
      size_t b = 0, e = s.size(), n = 0;
      while (n < start && s.compare(b, content.size(), content) == 0 && b + content.size() <= e) {
        b += content.size();
        ++n;
      }
      n = 0;
      while (n < stop && e >= b + content.size() && s.compare(e - content.size(), content.size(), content) == 0) {
        e -= content.size();
        ++n;
      }
      s = s.substr(b, e - b);
    }
  }
};

struct DecMetaspace final : Decoder {
  std::string replacement;
  bool strip_first = true;
  void apply(std::vector<std::string>& t) const override {
    for (size_t i = 0; i < t.size(); ++i) {
      std::string out;
      const std::string& s = t[i];
      for (size_t k = 0; k < s.size();) {
        if (s.compare(k, replacement.size(), replacement) == 0) {
          out += ' ';
          k += replacement.size();
        } else {
          out += s[k++];
        }
      }
      if (i == 0 && strip_first && !out.empty() && out[0] == ' ') out.erase(0, 1);
      t[i] = std::move(out);
    }
  }
};

}  // namespace

// --- byte level ------------------------------------------------------------------------

namespace {
struct ByteTables {
  uint32_t to_cp[256];
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteTables() {
    uint32_t extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_cp[b] = printable ? b : extra++;
      to_byte[to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}
void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}
}  // namespace

std::string byte_level_encode(std::string_view bytes) {
  const ByteTables& t = byte_tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(t.to_cp[b], out);
  return out;
}

void byte_level_decode(std::string_view chars, std::string& out) {
  const ByteTables& t = byte_tables();
  for (size_t i = 0; i < chars.size();) {
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(chars.data() + i),
                                                static_cast<utf8proc_ssize_t>(chars.size() - i), &cp);
    if (n <= 0) {
      out += chars[i++];
      continue;
    }
    const auto it = t.to_byte.find(static_cast<uint32_t>(cp));
    if (it != t.to_byte.end())
      out += static_cast<char>(it->second);
    else
      out.append(chars.data() + i, static_cast<size_t>(n));
    i += static_cast<size_t>(n);
  }
}

// --- factories -------------------------------------------------------------------------

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = str_field(j, "type", where);
  if (type == "Sequence") {
    auto s = std::make_unique<Sequence>();
    const json& list = field(j, "normalizers", where);
    for (size_t i = 0; i < list.size(); ++i)
      s->parts.push_back(make_normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]"));
    return s;
  }
  if (type == "NFC" || type == "NFKC") return std::make_unique<UnicodeNorm>(type == "NFKC");
  if (type == "Prepend") {
    auto p = std::make_unique<Prepend>();
    p->prefix = str_field(j, "prepend", where);
    return p;
  }
  if (type == "Replace") {
    auto r = std::make_unique<Replace>();
    r->pattern = pattern_of(field(j, "pattern", where), where);
    r->content = str_field(j, "content", where);
    return r;
  }
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  fail(where, "normalizer type \"" + type + "\" is not supported (NFC, NFKC, Prepend, Replace, Lowercase, Sequence)");
}

std::unique_ptr<PreTokenizer> make_pretokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = str_field(j, "type", where);
  if (type == "Sequence") {
    auto s = std::make_unique<PreSequence>();
    const json& list = field(j, "pretokenizers", where);
    for (size_t i = 0; i < list.size(); ++i)
      s->parts.push_back(make_pretokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]"));
    return s;
  }
  if (type == "Split") {
    if (bool_field(j, "invert", false, where)) fail(where, "Split with invert is not supported");
    auto s = std::make_unique<Split>();
    s->re = pattern_of(field(j, "pattern", where), where);
    s->behavior = behavior_of(j, where);
    return s;
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<ByteLevel>();
    b->add_prefix_space = bool_field(j, "add_prefix_space", false, where);
    if (bool_field(j, "use_regex", true, where)) b->re = std::make_unique<Regex>(kGpt2Pattern, where);
    return b;
  }
  if (type == "Digits") {
    auto d = std::make_unique<Digits>();
    d->re = std::make_unique<Regex>(bool_field(j, "individual_digits", false, where) ? "\\p{Nd}" : "\\p{Nd}+", where);
    return d;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<Metaspace>();
    m->replacement = str_field(j, "replacement", where);
    m->scheme = j.contains("prepend_scheme") ? str_field(j, "prepend_scheme", where)
                                              : (bool_field(j, "add_prefix_space", true, where) ? "always" : "never");
    m->split = bool_field(j, "split", true, where);
    m->re = std::make_unique<Regex>("\\Q" + m->replacement + "\\E", where);
    return m;
  }
  fail(where, "pre-tokenizer type \"" + type + "\" is not supported (Split, ByteLevel, Digits, Metaspace, Sequence)");
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = str_field(j, "type", where);
  if (type == "Sequence") {
    auto s = std::make_unique<DecSequence>();
    const json& list = field(j, "decoders", where);
    for (size_t i = 0; i < list.size(); ++i)
      s->parts.push_back(make_decoder(list[i], where + ".decoders[" + std::to_string(i) + "]"));
    return s;
  }
  if (type == "ByteLevel") return std::make_unique<DecByteLevel>();
  if (type == "Replace") {
    auto r = std::make_unique<DecReplace>();
    r->pattern = pattern_of(field(j, "pattern", where), where);
    r->content = str_field(j, "content", where);
    return r;
  }
  if (type == "ByteFallback") return std::make_unique<DecByteFallback>();
  if (type == "Fuse") return std::make_unique<DecFuse>();
  if (type == "Strip") {
    auto s = std::make_unique<DecStrip>();
    s->content = str_field(j, "content", where);
    s->start = field(j, "start", where).get<size_t>();
    s->stop = field(j, "stop", where).get<size_t>();
    return s;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<DecMetaspace>();
    m->replacement = str_field(j, "replacement", where);
    const std::string scheme = j.contains("prepend_scheme") ? str_field(j, "prepend_scheme", where) : "always";
    m->strip_first = scheme != "never" && bool_field(j, "add_prefix_space", true, where);
    return m;
  }
  fail(where, "decoder type \"" + type + "\" is not supported (ByteLevel, Replace, ByteFallback, Fuse, Strip, "
                                         "Metaspace, Sequence)");
}

// --- BPE -------------------------------------------------------------------------------

Bpe::Bpe(const json& model, const std::string& where) {
  const std::string type = str_field(model, "type", where);
  if (type != "BPE") fail(where, "model type \"" + type + "\" is not supported (BPE)");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto it = model.find(affix);
    if (it != model.end() && it->is_string() && !it->get<std::string>().empty())
      fail(where, std::string("\"") + affix + "\" is not supported");
  }
  const json& vocab = field(model, "vocab", where);
  if (!vocab.is_object()) fail(where, "\"vocab\" must be an object");
  for (const auto& [tok, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      fail(where + ".vocab", "the id of \"" + tok + "\" is not a non-negative integer");
    vocab_[tok] = id.get<int32_t>();
  }
  const json& merges = field(model, "merges", where);
  if (!merges.is_array()) fail(where, "\"merges\" must be an array");
  int32_t rank = 0;
  for (const json& m : merges) {
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) fail(where + ".merges[" + std::to_string(rank) + "]", "\"" + s + "\" is not \"a b\"");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail(where + ".merges[" + std::to_string(rank) + "]", "must be \"a b\" or [a, b]");
    }
    const auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
    if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
      fail(where + ".merges[" + std::to_string(rank) + "]", "\"" + a + "\" + \"" + b + "\" uses tokens not in the vocab");
    const uint64_t key = (static_cast<uint64_t>(ia->second) << 32) | static_cast<uint32_t>(ib->second);
    merges_.emplace(key, Merge{rank, iab->second});  // the first (lowest-rank) occurrence wins
    ++rank;
  }
  const auto unk = model.find("unk_token");
  if (unk != model.end() && unk->is_string()) {
    const auto it = vocab_.find(unk->get<std::string>());
    if (it == vocab_.end()) fail(where, "unk_token \"" + unk->get<std::string>() + "\" is not in the vocab");
    unk_ = it->second;
  }
  fuse_unk_ = bool_field(model, "fuse_unk", false, where);
  byte_fallback_ = bool_field(model, "byte_fallback", false, where);
  ignore_merges_ = bool_field(model, "ignore_merges", false, where);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    const auto it = vocab_.find(name);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
}

void Bpe::encode(const std::string& piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (const auto hit = cache_.find(piece); hit != cache_.end()) {
    out.insert(out.end(), hit->second.begin(), hit->second.end());
    return;
  }
  std::vector<int32_t> ids;
  const auto whole = vocab_.find(piece);
  if (ignore_merges_ && whole != vocab_.end()) {
    ids.push_back(whole->second);
  } else {
    // Characters to ids; unknown ones through byte fallback, else unk (fused when asked).
    bool last_unk = false;
    for (size_t i = 0; i < piece.size();) {
      const size_t n = char_len(piece, i);
      const auto it = vocab_.find(piece.substr(i, n));
      if (it != vocab_.end()) {
        ids.push_back(it->second);
        last_unk = false;
      } else if (byte_fallback_ && [&] {
                   for (size_t k = 0; k < n; ++k)
                     if (byte_ids_[static_cast<unsigned char>(piece[i + k])] < 0) return false;
                   return true;
                 }()) {
        for (size_t k = 0; k < n; ++k) ids.push_back(byte_ids_[static_cast<unsigned char>(piece[i + k])]);
        last_unk = false;
      } else if (unk_ >= 0) {
        if (!(fuse_unk_ && last_unk)) ids.push_back(unk_);
        last_unk = true;
      } else {
        throw FormatError("tokenizer: \"" + piece.substr(i, n) + "\" has no token and the model has no unk_token");
      }
      i += n;
    }
    // Merge the lowest-ranked adjacent pair (leftmost on ties) until none applies.
    while (ids.size() > 1) {
      int32_t best_rank = INT32_MAX, best_id = -1;
      size_t best_pos = 0;
      for (size_t i = 0; i + 1 < ids.size(); ++i) {
        const auto it = merges_.find((static_cast<uint64_t>(ids[i]) << 32) | static_cast<uint32_t>(ids[i + 1]));
        if (it != merges_.end() && it->second.rank < best_rank) {
          best_rank = it->second.rank;
          best_id = it->second.id;
          best_pos = i;
        }
      }
      if (best_id < 0) break;
      ids[best_pos] = best_id;
      ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
    }
  }
  if (cache_.size() > 100000) cache_.clear();
  cache_.emplace(piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

}  // namespace onn::tok
