// Chat templates: a model's chat_template (Jinja in tokenizer_config.json) is recognised by
// family and rendered by ONN's own formatter for that family (no Jinja interpreter):
// llama3, chatml (Qwen2, SmolLM), qwen3 (chatml with its <think> block on a final assistant
// turn), llama2 ([INST]), phi3 and phi4. An unrecognised template is an error listing the
// names, which --chat-format can pick directly.
#pragma once

#include <string>
#include <vector>

namespace onn {

enum class ChatFormat { llama3, chatml, qwen3, llama2, phi3, phi4 };

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};

std::string chat_format_names();  // "llama3, chatml, qwen3, llama2, phi3, phi4"
ChatFormat chat_format_from_name(const std::string& name);
// The family of a Jinja chat_template; InvalidArgument when it is none of them.
ChatFormat detect_chat_format(const std::string& jinja);

// The prompt text for `messages` (to be tokenized without the tokenizer's own specials);
// add_generation_prompt opens the assistant's turn. bos: the BOS token's text for the formats
// that start with it ("" to leave it out).
std::string format_chat(ChatFormat f, const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                        const std::string& bos = "");
// The token strings that end an assistant turn in this format.
std::vector<std::string> chat_end_tokens(ChatFormat f);

}  // namespace onn
