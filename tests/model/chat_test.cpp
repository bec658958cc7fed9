// Chat templates: Qwen3's real chat_template is recognised as chatml and ONN's formatting
// equals transformers' apply_chat_template (tests/data/tokenizers/qwen3/chat_expected.json);
// the other families' formats as their templates write them; detection and errors.
#include <doctest/doctest.h>

#include <string>

#include "model/chat.h"
#include "model/tokenizer.h"
#include "runtime/error.h"
#include "runtime/json.h"

using namespace onn;

namespace {
const std::string kQwen = std::string(ONN_TEST_DATA_DIR) + "/tokenizers/qwen3";
}  // namespace

TEST_CASE("Qwen3's chat_template is recognised and rendered as transformers renders it") {
  const Tokenizer tok = Tokenizer::load(kQwen);
  REQUIRE(!tok.chat_template().empty());
  const ChatFormat f = detect_chat_format(tok.chat_template());
  CHECK(f == ChatFormat::qwen3);
  const nlohmann::json expected = read_json_file(kQwen + "/chat_expected.json");
  for (const auto& c : expected["cases"]) {
    std::vector<ChatMessage> msgs;
    for (const auto& m : c["messages"]) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    CAPTURE(c["text"].get<std::string>());
    CHECK(format_chat(f, msgs, c["add_generation_prompt"].get<bool>()) == c["text"].get<std::string>());
  }
  // The end-of-turn marker is a single token of this tokenizer.
  CHECK(tok.token_to_id(chat_end_tokens(f)[0]).has_value());
}

TEST_CASE("the other chat families, as their published templates write them") {
  const std::vector<ChatMessage> msgs{{"system", "Be brief."}, {"user", " Hi "}, {"assistant", "Hello"}, {"user", "Bye"}};
  CHECK(format_chat(ChatFormat::llama3, msgs, true, "<|begin_of_text|>") ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        "Hello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(format_chat(ChatFormat::llama2, msgs, true, "<s>") ==
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]");
  CHECK(format_chat(ChatFormat::phi3, msgs, true) ==
        "<|system|>\nBe brief.<|end|>\n<|user|>\n Hi <|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n"
        "<|assistant|>\n");
  CHECK(format_chat(ChatFormat::chatml, {{"user", "Hi"}, {"assistant", "Yo"}}, false) ==
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n");
  CHECK(detect_chat_format("{{ '<|im_start|>' + message.role }}") == ChatFormat::chatml);
  CHECK(format_chat(ChatFormat::phi4, {{"user", "Hi"}}, true) ==
        "<|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>");
  CHECK(detect_chat_format("{{ '<|start_header_id|>' + message['role'] }}") == ChatFormat::llama3);
  CHECK(detect_chat_format("{{ '<|im_start|>' + role + '<|im_sep|>' }}") == ChatFormat::phi4);
  CHECK(detect_chat_format("{{ '<|user|>' }}{{ '<|end|>' }}") == ChatFormat::phi3);
  CHECK(detect_chat_format("{{ bos_token + '[INST] ' }}") == ChatFormat::llama2);
  CHECK(chat_format_from_name("phi3") == ChatFormat::phi3);
}

TEST_CASE("unrecognised templates and names are errors that list the formats") {
  CHECK_THROWS_WITH_AS(detect_chat_format("{{ '### Human: ' + content }}"),
                       doctest::Contains("llama3, chatml, qwen3, llama2, phi3, phi4"), InvalidArgument);
  CHECK_THROWS_WITH_AS(detect_chat_format(""), doctest::Contains("no chat_template"), InvalidArgument);
  CHECK_THROWS_WITH_AS(chat_format_from_name("vicuna"), doctest::Contains("unknown chat format \"vicuna\""),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(format_chat(ChatFormat::chatml, {{"tool", "x"}}, true), doctest::Contains("unknown role \"tool\""),
                       InvalidArgument);
}
