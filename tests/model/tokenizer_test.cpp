// tokenizer.json against the Hugging Face `tokenizers` package (tests/data/tokenizers, from
// make_tokenizer_fixtures.py): Qwen3 byte-level BPE, a Llama-3-style regex, a 32k
// SentencePiece-style BPE (and the same behind Digits + Metaspace), on code, numbers, CJK,
// emoji, combining marks, whitespace runs, newlines and special-token strings; round trips on
// random Unicode and random bytes; streaming decode; errors.
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "model/tokenizer.h"
#include "runtime/error.h"
#include "runtime/json.h"

using namespace onn;

namespace {
const std::string kTok = std::string(ONN_TEST_DATA_DIR) + "/tokenizers/";

std::vector<int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }
}  // namespace

TEST_CASE("encode and decode match the tokenizers package on every test text") {
  for (const char* name : {"qwen3", "llama3", "sp32k", "sp32k_metaspace"}) {
    CAPTURE(name);
    const Tokenizer tok = Tokenizer::load(kTok + name);
    const nlohmann::json expected = read_json_file(kTok + name + "/expected.json");
    for (const auto& c : expected["cases"]) {
      const std::string text = c["text"].get<std::string>();
      CAPTURE(text);
      CHECK(tok.encode(text, true) == ids_of(c["ids"]));
      CHECK(tok.encode(text, false) == ids_of(c["ids_no_special"]));
      CHECK(tok.decode(ids_of(c["ids"])) == c["decoded"].get<std::string>());
    }
  }
}

TEST_CASE("byte-level round trip: decode(encode(x)) == x on random Unicode and repaired random bytes") {
  const Tokenizer tok = Tokenizer::load(kTok + "llama3");  // no normalizer: text comes back as it went in
  std::mt19937 rng(5);
  const auto utf8 = [](uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      uint32_t cp;
      switch (rng() % 4) {
        case 0: cp = 32 + rng() % 95; break;        // ASCII
        case 1: cp = rng() % 32; break;             // controls and whitespace
        case 2: cp = 0x80 + rng() % 0x3000; break;  // Latin, combining marks, CJK punctuation ...
        default: cp = 0x10000 + rng() % 0x10000; break;  // emoji and other astral planes
      }
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0x41;
      text += utf8(cp);
    }
    CAPTURE(text);
    CHECK(tok.decode(tok.encode(text, false)) == text);
    std::string bytes;
    for (int i = 0; i < n; ++i) bytes += static_cast<char>(rng() % 256);
    CHECK(tok.decode(tok.encode(bytes, false)) == repair_utf8(bytes));
  }
}

TEST_CASE("streaming decode never splits a UTF-8 character and adds up to the full decode") {
  for (const char* name : {"qwen3", "sp32k"}) {
    CAPTURE(name);
    const Tokenizer tok = Tokenizer::load(kTok + name);
    const std::string text = "Emoji 😀👍🏽, 日本語, café\n\tand <0x41> bytes";
    const std::vector<int32_t> ids = tok.encode(text, true);
    StreamDecoder stream(tok);
    std::string joined;
    for (int32_t id : ids) {
      const std::string part = stream.push(id);
      CHECK(repair_utf8(part) == part);  // every part is valid UTF-8 on its own
      joined += part;
    }
    joined += stream.finish();
    CHECK(joined == tok.decode(ids, true));
  }
}

TEST_CASE("tokenizer errors: ids outside the vocabulary, unsupported pipeline parts, missing files") {
  const Tokenizer tok = Tokenizer::load(kTok + "sp32k");
  CHECK(tok.vocab_size() == 32000);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  const std::vector<int32_t> bad{5, 32000};
  CHECK_THROWS_WITH_AS(tok.decode(bad), doctest::Contains("token id 32000 is outside the vocabulary"), InvalidArgument);
  CHECK_THROWS_AS(Tokenizer::load(kTok + "nope"), IoError);
}
