// The pieces of a tokenizer.json pipeline (internal to model/): normalizers, pre-tokenizers,
// the BPE model and decoders, each built from its JSON object. Strings are UTF-8 bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace onn::tok {

// Errors name the file and the JSON path: "tokenizer.json: normalizer.normalizers[1]: ...".
[[noreturn]] void fail(const std::string& where, const std::string& why);

// Length of the UTF-8 character starting at s[i] (1 for a stray byte).
size_t char_len(std::string_view s, size_t i);

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);

// Pre-tokenizers refine a list of pieces; `first` marks the piece that starts the text
// (Metaspace's prepend_scheme "first").
struct Piece {
  std::string text;
  bool first = false;
};
struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_pretokenizer(const nlohmann::json& j, const std::string& where);

// GPT-2's byte <-> printable character mapping.
std::string byte_level_encode(std::string_view bytes);
// Appends the bytes of byte-level characters; a character outside the mapping is kept as is.
void byte_level_decode(std::string_view chars, std::string& out);

class Bpe {
 public:
  Bpe(const nlohmann::json& model, const std::string& where);
  // Appends the ids of one pre-tokenized piece.
  void encode(const std::string& piece, std::vector<int32_t>& out) const;
  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  std::unordered_map<std::string, int32_t> vocab_;
  struct Merge {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank, merged id
  int32_t unk_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256];  // "<0xXX>" ids for byte_fallback, -1 where absent
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Decoders turn the token strings of a decode into the text's bytes, as tokenizers' decode
// chain does.
struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where);

}  // namespace onn::tok
