// onn-generate: text from a Hugging Face model folder, streamed as it is generated; greedy
// (--temperature 0) or sampled, with NDJSON events under --json.
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "model/generate.h"
#include "runtime/error.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"onn-generate: generate text from a model folder (config.json, safetensors, tokenizer.json), "
               "streamed to stdout"};
  std::string model_dir, prompt, prompt_file, device_flag;
  onn::GenerateOptions opt;
  opt.sampling.temperature = 0.8f;
  opt.sampling.top_p = 0.95f;
  bool json = false;
  app.add_option("--model", model_dir, "a Hugging Face model folder")->required();
  auto* in = app.add_option_group("prompt", "the prompt");
  in->add_option("--prompt", prompt, "the prompt text");
  in->add_option("--prompt-file", prompt_file, "a file holding the prompt");
  in->require_option(1);
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
  return onn::tools::run_cli(app, "onn-generate", argc, argv, [&] {
    if (!prompt_file.empty()) {
      std::ifstream f(prompt_file, std::ios::binary);
      if (!f) throw onn::IoError(prompt_file + ": cannot open");
      std::ostringstream s;
      s << f.rdbuf();
      prompt = s.str();
    }
    for (const std::string& s : opt.stop)
      if (s.empty()) throw onn::InvalidArgument("--stop: an empty string");
    if (opt.sampling.top_p <= 0.0f) throw onn::InvalidArgument("--top-p must be above 0");
    onn::Context ctx(onn::tools::device_from_flag(device_flag));
    const onn::LlamaModel model = onn::LlamaModel::load(ctx, model_dir);
    const onn::Tokenizer tok = onn::Tokenizer::load(model_dir);
    const std::vector<int32_t> ids = tok.encode(prompt, true);
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
    const onn::GenerateResult r = onn::generate(ctx, model, tok, ids, opt, on_token);
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
