// Byte-level BPE training: words from the GPT-2 split regex, counted; merges chosen greedily
// by pair frequency (ties broken by the pair's strings, so the result is deterministic).
#include "model/tokenizer_train.h"

#include <map>

#include "model/tokenizer_parts.h"
#include "runtime/error.h"

namespace onn {

namespace {
// Splits UTF-8 text into characters.
std::vector<std::string> chars_of(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size(); i += out.back().size()) out.push_back(s.substr(i, tok::char_len(s, i)));
  return out;
}
}  // namespace

nlohmann::json train_byte_level_bpe(const std::string& text, int64_t vocab_size,
                                    const std::vector<std::string>& specials) {
  ONN_CHECK_ARG(!specials.empty(), "train_byte_level_bpe: at least one special token (the BOS)");
  const int64_t base = 256 + static_cast<int64_t>(specials.size());
  ONN_CHECK_ARG(vocab_size >= base, "tokenizer vocab size ", vocab_size, " is below the ", base,
                " byte and special tokens");
  const nlohmann::json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  // Words: the byte-level pre-tokenizer's pieces, with counts.
  std::map<std::vector<std::string>, int64_t> words;
  if (!text.empty()) {
    const auto pt = tok::make_pretokenizer(pre, "onn-init tokenizer");
    std::vector<tok::Piece> pieces{{text, true}};
    pt->apply(pieces);
    for (const tok::Piece& p : pieces) ++words[chars_of(p.text)];
  }
  nlohmann::json vocab = nlohmann::json::object();
  const std::string all_bytes = [] {
    std::string b;
    for (int i = 0; i < 256; ++i) b += static_cast<char>(i);
    return b;
  }();
  for (const std::string& c : chars_of(tok::byte_level_encode(all_bytes))) {
    const size_t id = vocab.size();
    vocab[c] = id;
  }
  nlohmann::json merges = nlohmann::json::array();
  while (static_cast<int64_t>(vocab.size()) + static_cast<int64_t>(specials.size()) < vocab_size) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    for (const auto& [w, n] : words)
      for (size_t i = 0; i + 1 < w.size(); ++i) pairs[{w[i], w[i + 1]}] += n;
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it)
      if (it->second > best->second) best = it;
    const auto [a, b] = best->first;
    if (!vocab.contains(a + b)) {  // it can exist already, reached through another split
      const size_t id = vocab.size();
      vocab[a + b] = id;
    }
    merges.push_back(nlohmann::json::array({a, b}));
    std::map<std::vector<std::string>, int64_t> next;
    for (const auto& [w, n] : words) {
      std::vector<std::string> m;
      for (size_t i = 0; i < w.size(); ++i) {
        if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
          m.push_back(a + b);
          ++i;
        } else {
          m.push_back(w[i]);
        }
      }
      next[m] += n;
    }
    words = std::move(next);
  }
  nlohmann::json added = nlohmann::json::array();
  const int64_t first_special = static_cast<int64_t>(vocab.size());
  for (size_t i = 0; i < specials.size(); ++i)
    added.push_back({{"id", first_special + static_cast<int64_t>(i)}, {"content", specials[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  nlohmann::json doc;
  doc["version"] = "1.0";
  doc["truncation"] = nullptr;
  doc["padding"] = nullptr;
  doc["added_tokens"] = added;
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = pre;
  doc["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", nlohmann::json::array({{{"SpecialToken", {{"id", specials[0]}, {"type_id", 0}}}},
                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", nlohmann::json::array({{{"SpecialToken", {{"id", specials[0]}, {"type_id", 0}}}},
                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                      {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens",
       {{specials[0], {{"id", specials[0]}, {"ids", nlohmann::json::array({first_special})},
                       {"tokens", nlohmann::json::array({specials[0]})}}}}}};
  doc["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  doc["model"] = {{"type", "BPE"},          {"dropout", nullptr},  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                  {"byte_fallback", false}, {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}};
  return doc;
}

}  // namespace onn
