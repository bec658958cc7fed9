// onn-generate: text from a Hugging Face model folder, streamed as it is generated; greedy
// (--temperature 0) or sampled, with NDJSON events under --json.
#include <chrono>
#include <iostream>

#include <unistd.h>

#include "model/chat.h"
#include "model/generate.h"
#include "model/lora.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "tools/cli.h"
#include "tools/placement_flags.h"

namespace {

struct GenerateArgs {
  std::string model_dir, adapter_dir, prompt, prompt_file, device_flag, system, chat_format;
  onn::GenerateOptions opt;
  bool json = false, chat = false, plan = false;
  onn::PlacementFlags placement;
};

void add_flags(CLI::App& app, GenerateArgs& a) {
  onn::GenerateOptions& opt = a.opt;
  opt.sampling.temperature = 0.8f;
  opt.sampling.top_p = 0.95f;
  app.add_option("--model", a.model_dir, "a Hugging Face model folder")->required();
  app.add_option("--adapter", a.adapter_dir, "a LoRA adapter folder (PEFT layout, e.g. onn-train's adapter/) applied "
                                          "to the model");
  auto* in = app.add_option_group("prompt", "the prompt");
  in->add_option("--prompt", a.prompt, "the prompt text");
  in->add_option("--prompt-file", a.prompt_file, "a file holding the prompt");
  in->require_option(0, 1);
  app.add_flag("--chat", a.chat, "format the prompt as a user turn with the model's chat template; without a prompt "
                                 "and on a terminal, an interactive chat");
  app.add_option("--system", a.system, "with --chat: a system message first");
  app.add_option("--chat-format", a.chat_format, "with --chat: llama3, chatml, qwen3, llama2, phi3 or phi4 instead of "
                                                 "the one the model's chat_template implies");
  app.add_option("--max-new-tokens", opt.max_new_tokens, "tokens to generate at most (default 256)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  app.add_option("--temperature", opt.sampling.temperature, "sampling temperature; 0 is greedy (default 0.8)")
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", opt.sampling.top_k, "keep the k most likely tokens; 0 is off (default)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--top-p", opt.sampling.top_p, "keep the smallest set with this much probability (default 0.95)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--min-p", opt.sampling.min_p, "drop tokens below min-p times the top probability; 0 is off (default)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--repetition-penalty", opt.repetition_penalty,
                 "divide the logits of tokens already in the context by this (default 1, off)")
      ->check(CLI::Range(0.01, 100.0));
  app.add_option("--seed", opt.seed, "sampling seed (default 0: the same output every run)");
  app.add_option("--stop", opt.stop, "stop before this string (repeatable)");
  app.add_option("--device", a.device_flag, "cpu or cuda[:N] (default: cuda when present)");
  app.add_flag("--json", a.json, "NDJSON events: {\"type\":\"token\",\"text\":...} per token, then "
                                 "{\"type\":\"done\",\"tokens\":N,\"ms\":M,\"tok_per_s\":X}");
  onn::tools::add_placement_flags(app, a.placement, {"generation"});
  onn::tools::add_plan_flags(app, a.plan, a.placement, "print whether the model runs resident or streamed, the "
                             "predicted device memory and (streamed) the PCIe time per decoded token, from "
                             "config.json alone, and exit");
}

// The flags that only make sense together, and the prompt file read.
void check_args(GenerateArgs& a) {
  onn::tools::check_host_ram(a.placement, a.plan);
  if (!a.chat && a.prompt.empty() && a.prompt_file.empty())
    throw onn::InvalidArgument("give --prompt or --prompt-file (or --chat on a terminal)");
  if (!a.chat && (!a.system.empty() || !a.chat_format.empty()))
    throw onn::InvalidArgument("--system and --chat-format need --chat");
  if (!a.prompt_file.empty()) a.prompt = onn::read_file(a.prompt_file, size_t{1} << 30);
  for (const std::string& s : a.opt.stop)
    if (s.empty()) throw onn::InvalidArgument("--stop: an empty string");
  if (a.opt.sampling.top_p <= 0.0f) throw onn::InvalidArgument("--top-p must be above 0");
}

// The prompt as ids: plain, or a user turn of the model's chat template (its family from
// chat_template, or --chat-format), whose end-of-turn tokens become end tokens.
class Turns {
 public:
  Turns(const GenerateArgs& a, const onn::Tokenizer& tok, onn::GenerateOptions& opt) : chat_(a.chat), tok_(tok) {
    if (!chat_) return;
    format_ = a.chat_format.empty() ? onn::detect_chat_format(tok.chat_template()) : onn::chat_format_from_name(a.chat_format);
    if (tok.bos_id()) bos_text_ = tok.id_to_token(*tok.bos_id());
    for (const std::string& t : onn::chat_end_tokens(format_))
      if (const auto id = tok.token_to_id(t)) opt.extra_eos.push_back(*id);
    if (!a.system.empty()) messages_.push_back({"system", a.system});
  }
  std::vector<int32_t> user(const std::string& text) {
    if (!chat_) return tok_.encode(text, true);
    messages_.push_back({"user", text});
    return tok_.encode(onn::format_chat(format_, messages_, true, bos_text_), false);
  }
  void assistant(const std::string& text) { messages_.push_back({"assistant", text}); }

 private:
  bool chat_;
  const onn::Tokenizer& tok_;
  onn::ChatFormat format_ = onn::ChatFormat::chatml;
  std::string bos_text_;
  std::vector<onn::ChatMessage> messages_;
};

void print_done(const onn::GenerateResult& r, size_t prompt_tokens) {
  const double secs = r.decode_ms / 1000.0;
  std::cout << nlohmann::ordered_json{{"type", "done"},
                                      {"tokens", r.tokens.size()},
                                      {"ms", r.prefill_ms + r.decode_ms},
                                      {"tok_per_s", secs > 0 ? static_cast<double>(r.tokens.size()) / secs : 0.0},
                                      {"prompt_tokens", prompt_tokens},
                                      {"finish_reason", r.finish_reason}}
                   .dump()
            << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"onn-generate: generate text from a model folder (config.json, safetensors, tokenizer.json), "
               "streamed to stdout"};
  GenerateArgs a;
  add_flags(app, a);
  return onn::tools::run_cli(app, "onn-generate", argc, argv, [&] {
    if (a.plan) {
      const onn::Device device = a.device_flag.empty() ? onn::default_device() : onn::Device::parse(a.device_flag);
      const onn::GenerationPlan p = onn::generation_plan(device, a.model_dir, a.placement, {1, 2048, 512});
      std::cout << (a.json ? p.to_json().dump() + "\n" : p.to_text());
      return 0;
    }
    check_args(a);
    onn::Context ctx(onn::tools::device_from_flag(a.device_flag));
    const onn::ModelConfig cfg = onn::load_model_config(a.model_dir);
    const onn::PlacedModel placed = onn::place_for_generation(
        ctx, a.model_dir, a.placement, {1, std::min<int64_t>(cfg.max_position_embeddings, 2048), 512});
    onn::LlamaModel& model = *placed.model;
    // An adapter is folded into the weights once, so the forward runs at full speed.
    if (!a.adapter_dir.empty()) {
      if (placed.stream) throw onn::InvalidArgument("--adapter with a streamed model: merge it first with onn-merge");
      onn::merge_lora(ctx, model, onn::load_peft_adapter(ctx, model, a.adapter_dir));
    }
    const onn::Tokenizer tok = onn::Tokenizer::load(a.model_dir);
    const auto on_token = [&](const std::string& text) {
      if (a.json)
        std::cout << nlohmann::ordered_json{{"type", "token"}, {"text", text}}.dump(
                         -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace)
                  << "\n";
      else
        std::cout << text;
      std::cout.flush();
    };
    Turns turns(a, tok, a.opt);
    if (a.chat && a.prompt.empty() && a.prompt_file.empty()) {
      if (::isatty(STDIN_FILENO) == 0)
        throw onn::InvalidArgument("--chat without a prompt is interactive and needs a terminal on stdin");
      std::string line;
      while ((std::cerr << "> " << std::flush) && std::getline(std::cin, line)) {
        if (line.empty()) continue;
        const onn::GenerateResult r = onn::generate(ctx, model, tok, turns.user(line), a.opt, on_token, placed.feed());
        std::cout << "\n";
        turns.assistant(r.text);
      }
      return 0;
    }
    const std::vector<int32_t> ids = turns.user(a.prompt);
    const onn::GenerateResult r = onn::generate(ctx, model, tok, ids, a.opt, on_token, placed.feed());
    if (a.json)
      print_done(r, ids.size());
    else
      std::cout << "\n";
    return 0;
  });
}
