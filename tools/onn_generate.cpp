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

int main(int argc, char** argv) {
  CLI::App app{"onn-generate: generate text from a model folder (config.json, safetensors, tokenizer.json), "
               "streamed to stdout"};
  std::string model_dir, adapter_dir, prompt, prompt_file, device_flag;
  onn::GenerateOptions opt;
  opt.sampling.temperature = 0.8f;
  opt.sampling.top_p = 0.95f;
  bool json = false;
  app.add_option("--model", model_dir, "a Hugging Face model folder")->required();
  app.add_option("--adapter", adapter_dir, "a LoRA adapter folder (PEFT layout, e.g. onn-train's adapter/) applied "
                                        "to the model");
  auto* in = app.add_option_group("prompt", "the prompt");
  in->add_option("--prompt", prompt, "the prompt text");
  in->add_option("--prompt-file", prompt_file, "a file holding the prompt");
  in->require_option(0, 1);
  bool chat = false;
  std::string system, chat_format;
  app.add_flag("--chat", chat, "format the prompt as a user turn with the model's chat template; without a prompt "
                               "and on a terminal, an interactive chat");
  app.add_option("--system", system, "with --chat: a system message first");
  app.add_option("--chat-format", chat_format, "with --chat: llama3, chatml, qwen3, llama2, phi3 or phi4 instead of "
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
  app.add_option("--device", device_flag, "cpu or cuda[:N] (default: cuda when present)");
  app.add_flag("--json", json, "NDJSON events: {\"type\":\"token\",\"text\":...} per token, then "
                               "{\"type\":\"done\",\"tokens\":N,\"ms\":M,\"tok_per_s\":X}");
  onn::PlacementFlags placement;
  bool plan = false;
  onn::tools::add_placement_flags(app, placement, {"generation"});
  onn::tools::add_plan_flags(app, plan, placement, "print whether the model runs resident or streamed, the predicted "
                             "device memory and (streamed) the PCIe time per decoded token, from config.json alone, "
                             "and exit");
  return onn::tools::run_cli(app, "onn-generate", argc, argv, [&] {
    if (plan) {
      const onn::Device device = device_flag.empty() ? onn::default_device() : onn::Device::parse(device_flag);
      const onn::GenerationPlan p = onn::generation_plan(device, model_dir, placement, {1, 2048, 512});
      std::cout << (json ? p.to_json().dump() + "\n" : p.to_text());
      return 0;
    }
    onn::tools::check_host_ram(placement, plan);
    if (!chat && prompt.empty() && prompt_file.empty())
      throw onn::InvalidArgument("give --prompt or --prompt-file (or --chat on a terminal)");
    if (!chat && (!system.empty() || !chat_format.empty()))
      throw onn::InvalidArgument("--system and --chat-format need --chat");
    if (!prompt_file.empty()) prompt = onn::read_file(prompt_file, size_t{1} << 30);
    for (const std::string& s : opt.stop)
      if (s.empty()) throw onn::InvalidArgument("--stop: an empty string");
    if (opt.sampling.top_p <= 0.0f) throw onn::InvalidArgument("--top-p must be above 0");
    onn::Context ctx(onn::tools::device_from_flag(device_flag));
    const onn::ModelConfig cfg = onn::load_model_config(model_dir);
    const onn::PlacedModel placed = onn::place_for_generation(
        ctx, model_dir, placement, {1, std::min<int64_t>(cfg.max_position_embeddings, 2048), 512});
    onn::LlamaModel& model = *placed.model;
    // An adapter is folded into the weights once, so the forward runs at full speed.
    if (!adapter_dir.empty()) {
      if (placed.stream) throw onn::InvalidArgument("--adapter with a streamed model: merge it first with onn-merge");
      onn::merge_lora(ctx, model, onn::load_peft_adapter(ctx, model, adapter_dir));
    }
    const onn::Tokenizer tok = onn::Tokenizer::load(model_dir);
    const auto on_token = [&](const std::string& text) {
      if (json) {
        std::cout << nlohmann::ordered_json{{"type", "token"}, {"text", text}}.dump(
                         -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace)
                  << "\n";
      } else {
        std::cout << text;
      }
      std::cout.flush();
    };
    // Chat: the model's template family (or --chat-format), its end-of-turn tokens as EOS.
    std::vector<onn::ChatMessage> messages;
    onn::ChatFormat format = onn::ChatFormat::chatml;
    std::string bos_text;
    if (chat) {
      format = chat_format.empty() ? onn::detect_chat_format(tok.chat_template()) : onn::chat_format_from_name(chat_format);
      if (tok.bos_id()) bos_text = tok.id_to_token(*tok.bos_id());
      for (const std::string& t : onn::chat_end_tokens(format))
        if (const auto id = tok.token_to_id(t)) opt.extra_eos.push_back(*id);
      if (!system.empty()) messages.push_back({"system", system});
    }
    const auto encode_turn = [&](const std::string& user) {
      if (!chat) return tok.encode(user, true);
      messages.push_back({"user", user});
      return tok.encode(onn::format_chat(format, messages, true, bos_text), false);
    };
    if (chat && prompt.empty() && prompt_file.empty()) {
      if (::isatty(STDIN_FILENO) == 0)
        throw onn::InvalidArgument("--chat without a prompt is interactive and needs a terminal on stdin");
      std::string line;
      while ((std::cerr << "> " << std::flush) && std::getline(std::cin, line)) {
        if (line.empty()) continue;
        const onn::GenerateResult r = onn::generate(ctx, model, tok, encode_turn(line), opt, on_token, placed.feed());
        std::cout << "\n";
        messages.push_back({"assistant", r.text});
      }
      return 0;
    }
    const std::vector<int32_t> ids = encode_turn(prompt);
    const onn::GenerateResult r = onn::generate(ctx, model, tok, ids, opt, on_token, placed.feed());
    const double ms = r.prefill_ms + r.decode_ms;
    if (json) {
      const double secs = r.decode_ms / 1000.0;
      std::cout << nlohmann::ordered_json{{"type", "done"},
                                          {"tokens", r.tokens.size()},
                                          {"ms", ms},
                                          {"tok_per_s", secs > 0 ? static_cast<double>(r.tokens.size()) / secs : 0.0},
                                          {"prompt_tokens", ids.size()},
                                          {"finish_reason", r.finish_reason}}
                       .dump()
                << "\n";
    } else {
      std::cout << "\n";
    }
    return 0;
  });
}
