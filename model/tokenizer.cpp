// Tokenizer: loading tokenizer.json / tokenizer_config.json, added-token matching, the
// encode and decode pipelines, and streaming decode.
#include "model/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "model/tokenizer_parts.h"
#include "runtime/error.h"
#include "runtime/json.h"

namespace onn {

using nlohmann::json;

namespace {

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence at s[i], or 0 if the bytes there are not one (or not
// complete).
size_t valid_char(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if ((c >> 5) == 0x6) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c >> 4) == 0xE) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c >> 3) == 0x1E) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string config_token(const json& cfg, const char* key) {
  const auto it = cfg.find(key);
  if (it == cfg.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return "";
}

}  // namespace

std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = valid_char(s, i);
    if (n == 0) {
      out += kReplacement;
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path file = fs::is_directory(path) ? fs::path(path) / "tokenizer.json" : fs::path(path);
  if (!fs::exists(file)) throw IoError(file.string() + ": no such file");
  Tokenizer t;
  t.source_ = file.string();
  const json doc = read_json_file(t.source_);
  if (!doc.is_object()) tok::fail(t.source_, "not a JSON object");
  const auto part = [&](const char* key) -> const json& {
    static const json null_json;
    const auto it = doc.find(key);
    return it == doc.end() ? null_json : *it;
  };
  if (part("model").is_null()) tok::fail(t.source_, "missing \"model\"");
  t.bpe_ = std::make_unique<tok::Bpe>(part("model"), t.source_ + ": model");
  t.normalizer_ = tok::make_normalizer(part("normalizer"), t.source_ + ": normalizer");
  t.pre_ = tok::make_pretokenizer(part("pre_tokenizer"), t.source_ + ": pre_tokenizer");
  t.decoder_ = tok::make_decoder(part("decoder"), t.source_ + ": decoder");

  int32_t max_id = -1;
  for (const auto& [token, id] : t.bpe_->vocab()) max_id = std::max(max_id, id);
  const json& added = part("added_tokens");
  if (!added.is_null() && !added.is_array()) tok::fail(t.source_, "\"added_tokens\" must be an array");
  for (size_t i = 0; !added.is_null() && i < added.size(); ++i) {
    const json& a = added[i];
    const std::string where = t.source_ + ": added_tokens[" + std::to_string(i) + "]";
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
        a["id"].get<int64_t>() > INT32_MAX || !a.contains("content") || !a["content"].is_string() ||
        a["content"].get<std::string>().empty())
      tok::fail(where, "needs a non-negative integer \"id\" and a non-empty \"content\"");
    Added x{a["content"].get<std::string>(), a["id"].get<int32_t>(), a.value("special", false), a.value("lstrip", false),
            a.value("rstrip", false)};
    max_id = std::max(max_id, x.id);
    t.added_.push_back(std::move(x));
  }
  std::stable_sort(t.added_.begin(), t.added_.end(),
                   [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
  t.id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  t.special_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : t.bpe_->vocab()) t.id_to_token_[static_cast<size_t>(id)] = token;
  for (const Added& a : t.added_) {
    t.id_to_token_[static_cast<size_t>(a.id)] = a.content;
    t.special_[static_cast<size_t>(a.id)] = a.special;
  }

  // Post-processor: the special tokens TemplateProcessing puts around a single sequence.
  std::vector<const json*> processors;
  const json& post = part("post_processor");
  if (!post.is_null()) {
    if (post.value("type", "") == "Sequence" && post.contains("processors") && post["processors"].is_array()) {
      for (const json& p : post["processors"]) processors.push_back(&p);
    } else {
      processors.push_back(&post);
    }
  }
  for (const json* p : processors) {
    const std::string type = p->value("type", "");
    const std::string where = t.source_ + ": post_processor";
    if (type == "ByteLevel") continue;  // offsets only
    if (type != "TemplateProcessing")
      tok::fail(where, "type \"" + type + "\" is not supported (TemplateProcessing, ByteLevel, Sequence)");
    const json& single = (*p)["single"];
    const json& specials = (*p)["special_tokens"];
    if (!single.is_array()) tok::fail(where, "\"single\" must be an array");
    bool after = false;
    for (const json& item : single) {
      if (item.contains("Sequence")) {
        after = true;
        continue;
      }
      if (!item.contains("SpecialToken")) tok::fail(where, "unknown template item " + item.dump());
      const std::string name = item["SpecialToken"].value("id", "");
      if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
        tok::fail(where, "special token \"" + name + "\" has no ids");
      for (const json& id : specials[name]["ids"]) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > max_id)
          tok::fail(where, "special token \"" + name + "\" has an id outside the vocabulary");
        (after ? t.suffix_ : t.prefix_).push_back(id.get<int32_t>());
      }
    }
  }

  const fs::path cfg_file = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg_file)) {
    const json cfg = read_json_file(cfg_file.string());
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) {
        t.chat_template_ = ct.get<std::string>();
      } else if (ct.is_array()) {
        for (const json& e : ct)
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
            t.chat_template_ = e["template"].get<std::string>();
      }
    }
    if (const std::string b = config_token(cfg, "bos_token"); !b.empty()) t.bos_id_ = t.token_to_id(b);
    if (const std::string e = config_token(cfg, "eos_token"); !e.empty()) t.eos_id_ = t.token_to_id(e);
  }
  return t;
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const Added& a : added_)
    if (a.content == token) return a.id;
  const auto it = bpe_->vocab().find(std::string(token));
  if (it == bpe_->vocab().end()) return std::nullopt;
  return it->second;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  ONN_CHECK_ARG(id >= 0 && id < vocab_size() && !(id_to_token_[static_cast<size_t>(id)].empty()), "token id ", id,
                " is outside the vocabulary of ", source_, " (", vocab_size(), " ids)");
  return id_to_token_[static_cast<size_t>(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)];
}

void Tokenizer::encode_segment(const std::string& text, bool first, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string s = text;
  if (normalizer_) normalizer_->apply(s);
  std::vector<tok::Piece> pieces{{s, first}};
  if (pre_) pre_->apply(pieces);
  for (const tok::Piece& p : pieces) bpe_->encode(p.text, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view raw, bool add_special) const {
  const std::string text = repair_utf8(raw);
  std::vector<int32_t> ids;
  if (add_special) ids = prefix_;
  // Added tokens split the text first: at each position the longest one that matches.
  size_t seg_begin = 0, i = 0;
  while (i < text.size()) {
    const Added* hit = nullptr;
    for (const Added& a : added_)
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t seg_end = i;
    if (hit->lstrip)
      while (seg_end > seg_begin && is_space(text[seg_end - 1])) --seg_end;
    encode_segment(text.substr(seg_begin, seg_end - seg_begin), seg_begin == 0, ids);
    ids.push_back(hit->id);
    i += hit->content.size();
    if (hit->rstrip)
      while (i < text.size() && is_space(text[i])) ++i;
    seg_begin = i;
  }
  encode_segment(text.substr(seg_begin), seg_begin == 0, ids);
  if (add_special) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string& t = id_to_token(id);
    if (skip_special && is_special(id)) continue;
    tokens.push_back(t);
  }
  if (decoder_) decoder_->apply(tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return repair_utf8(decode_bytes(ids, skip_special));
}

std::string StreamDecoder::decode_from_prefix(size_t end) const {
  return tok_.decode_bytes(std::span<const int32_t>(ids_).subspan(prefix_, end - prefix_), skip_);
}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::string done = decode_from_prefix(read_), now = decode_from_prefix(ids_.size());
  if (now.size() <= done.size() || now.compare(0, done.size(), done) != 0) return "";
  const std::string_view tail = std::string_view(now).substr(done.size());
  // Hold the whole tail back while it ends inside a UTF-8 character.
  for (size_t back = 1; back <= 3 && back <= tail.size(); ++back) {
    const auto c = static_cast<unsigned char>(tail[tail.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > back) return "";
    break;
  }
  prefix_ = read_;
  read_ = ids_.size();
  return repair_utf8(tail);
}

std::string StreamDecoder::finish() {
  const std::string done = decode_from_prefix(read_), now = decode_from_prefix(ids_.size());
  prefix_ = read_ = ids_.size();
  if (now.size() <= done.size() || now.compare(0, done.size(), done) != 0) return "";
  return repair_utf8(std::string_view(now).substr(done.size()));
}

}  // namespace onn
