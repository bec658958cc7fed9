// Hugging Face tokenizer.json (+ tokenizer_config.json): BPE with the byte-level
// pre-tokenizer and decoder (GPT-2, Llama-3, Qwen2/3, SmolLM, Phi-4) or SentencePiece-style
// (Llama-2, TinyLlama, Mistral: byte_fallback, fuse_unk), the file's own normalizers,
// pre-tokenizers, added tokens (matched first, longest at each position), post-processor and
// decoder. Encoding repairs invalid UTF-8 input (each bad byte becomes U+FFFD) instead of
// failing; decoding an id outside the vocabulary is an error.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace onn {

namespace tok {
struct Normalizer;
struct PreTokenizer;
struct Decoder;
class Bpe;
}  // namespace tok

class Tokenizer {
 public:
  // A tokenizer.json file, or a folder holding tokenizer.json (and tokenizer_config.json).
  static Tokenizer load(const std::string& path);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special: the post-processor's special tokens (BOS, ...). Special-token strings in the
  // text are always matched as their tokens.
  std::vector<int32_t> encode(std::string_view text, bool add_special = true) const;
  // Valid UTF-8 (invalid byte runs from byte-level tokens become U+FFFD).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes of a decode, which may end inside a UTF-8 character (streaming).
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const;

  int64_t vocab_size() const;  // one past the largest id
  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string& id_to_token(int32_t id) const;  // throws InvalidArgument outside the vocabulary
  bool is_special(int32_t id) const;

  // From tokenizer_config.json when present.
  const std::string& chat_template() const { return chat_template_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }

 private:
  Tokenizer();
  struct Added {
    std::string content;
    int32_t id;
    bool special, lstrip, rstrip;
  };
  void encode_segment(const std::string& text, bool first, std::vector<int32_t>& out) const;

  std::string source_;
  std::unique_ptr<tok::Normalizer> normalizer_;
  std::unique_ptr<tok::PreTokenizer> pre_;
  std::unique_ptr<tok::Bpe> bpe_;
  std::unique_ptr<tok::Decoder> decoder_;
  std::vector<Added> added_;             // longest first
  std::vector<std::string> id_to_token_;  // "" for unused ids
  std::vector<bool> special_;
  std::vector<int32_t> prefix_, suffix_;  // post-processor tokens around a single sequence
  std::string chat_template_;
  std::optional<int32_t> bos_id_, eos_id_;
};

// Incremental decoding for streaming: push token ids, get the text that became complete
// (never a partial UTF-8 character; held back until its last byte arrives).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true) : tok_(tok), skip_(skip_special) {}
  std::string push(int32_t id);
  std::string finish();  // whatever is left (incomplete bytes become U+FFFD)

 private:
  // Only a window of ids is decoded per push (as tokenizers' DecodeStream does): the text of
  // ids_[prefix_, read_) was handed out already, and decoding from prefix_ keeps decoders that
  // treat the first token specially (Strip, Metaspace) consistent between the two decodes.
  std::string decode_from_prefix(size_t end) const;
  const Tokenizer& tok_;
  bool skip_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0, read_ = 0;
};

// Each invalid UTF-8 byte of `s` replaced by U+FFFD.
std::string repair_utf8(std::string_view s);

}  // namespace onn
