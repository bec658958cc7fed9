// The chat formatters, one per template family, written from each family's published template.
#include "model/chat.h"

#include "runtime/error.h"

namespace onn {

namespace {
struct Named {
  const char* name;
  ChatFormat format;
};
constexpr Named kFormats[] = {{"llama3", ChatFormat::llama3},
                              {"chatml", ChatFormat::chatml},
                              {"qwen3", ChatFormat::qwen3},
                              {"llama2", ChatFormat::llama2},
                              {"phi3", ChatFormat::phi3},
                              {"phi4", ChatFormat::phi4}};

std::string strip(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}
}  // namespace

std::string chat_format_names() {
  std::string s;
  for (const Named& n : kFormats) s += (s.empty() ? "" : ", ") + std::string(n.name);
  return s;
}

ChatFormat chat_format_from_name(const std::string& name) {
  for (const Named& n : kFormats)
    if (name == n.name) return n.format;
  throw InvalidArgument("unknown chat format \"" + name + "\"; formats: " + chat_format_names());
}

ChatFormat detect_chat_format(const std::string& jinja) {
  const auto has = [&](const char* s) { return jinja.find(s) != std::string::npos; };
  if (jinja.empty()) throw InvalidArgument("the model has no chat_template; pick one with --chat-format (" + chat_format_names() + ")");
  if (has("<|start_header_id|>")) return ChatFormat::llama3;
  if (has("<|im_sep|>")) return ChatFormat::phi4;
  if (has("<|im_start|>")) return has("<think>") ? ChatFormat::qwen3 : ChatFormat::chatml;
  if (has("<|user|>") && has("<|end|>")) return ChatFormat::phi3;
  if (has("[INST]")) return ChatFormat::llama2;
  throw InvalidArgument("the model's chat_template is not one ONN recognises; pick a format with --chat-format (" +
                        chat_format_names() + ")");
}

std::string format_chat(ChatFormat f, const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                        const std::string& bos) {
  for (const ChatMessage& m : messages)
    ONN_CHECK_ARG(m.role == "system" || m.role == "user" || m.role == "assistant", "chat: unknown role \"", m.role,
                  "\" (system, user, assistant)");
  std::string out;
  switch (f) {
    case ChatFormat::llama3:
      out = bos;
      for (const ChatMessage& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + strip(m.content) + "<|eot_id|>";
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::chatml:
    case ChatFormat::qwen3: {
      // Qwen3 writes an empty <think> block into a conversation's final assistant turn when
      // it follows the last user message.
      size_t last_user = messages.size();
      for (size_t i = 0; i < messages.size(); ++i)
        if (messages[i].role == "user") last_user = i;
      for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (f == ChatFormat::qwen3 && m.role == "assistant" && i + 1 == messages.size() && last_user < i) {
          const size_t b = m.content.find_first_not_of('\n');
          out += "<|im_start|>assistant\n<think>\n\n</think>\n\n" + (b == std::string::npos ? "" : m.content.substr(b)) +
                 "<|im_end|>\n";
        } else {
          out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
        }
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    }
    case ChatFormat::phi4:
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "<|im_sep|>" + m.content + "<|im_end|>";
      if (add_generation_prompt) out += "<|im_start|>assistant<|im_sep|>";
      break;
    case ChatFormat::phi3:
      for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      if (add_generation_prompt) out += "<|assistant|>\n";
      break;
    case ChatFormat::llama2: {
      // The system prompt rides in the first user turn; each exchange is <s>[INST] ... [/INST] ... </s>.
      std::string system;
      size_t i = 0;
      if (!messages.empty() && messages[0].role == "system") {
        system = messages[0].content;
        i = 1;
      }
      bool first_user = true;
      for (; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (m.role == "user") {
          std::string content = strip(m.content);
          if (first_user && !system.empty()) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
          first_user = false;
          out += bos + "[INST] " + content + " [/INST]";
        } else if (m.role == "assistant") {
          out += " " + strip(m.content) + " </s>";
        } else {
          throw InvalidArgument("chat (llama2): a system message is only allowed first");
        }
      }
      break;
    }
  }
  return out;
}

std::vector<std::string> chat_end_tokens(ChatFormat f) {
  switch (f) {
    case ChatFormat::llama3: return {"<|eot_id|>", "<|end_of_text|>"};
    case ChatFormat::chatml:
    case ChatFormat::qwen3:
    case ChatFormat::phi4: return {"<|im_end|>", "<|endoftext|>"};
    case ChatFormat::phi3: return {"<|end|>", "<|endoftext|>"};
    case ChatFormat::llama2: return {"</s>"};
  }
  return {};
}

}  // namespace onn
