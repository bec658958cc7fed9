// onn-init: a randomly initialised Hugging Face model folder from a preset (config.json,
// model.safetensors, tokenizer.json with merges learned from --tokenizer-text). No downloads.
#include <iostream>

#include "model/init.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"onn-init: write a randomly initialised model folder (config.json, model.safetensors, "
               "tokenizer.json) from a preset"};
  std::string preset, out, dtype = "bfloat16", text_file;
  uint64_t seed = 0, shard = 5'000'000'000;
  int64_t tokenizer_vocab = 0, vocab_size = 0;
  bool preset_vocab = false;
  bool list = false;
  std::string names;
  for (const auto& p : onn::model_presets()) names += (names.empty() ? "" : ", ") + p.name;
  app.add_option("--preset", preset, names + " (see --list-presets)");
  app.add_option("--out", out, "the folder to write (created if missing)");
  app.add_option("--seed", seed, "random seed for the weights (default 0)");
  app.add_option("--dtype", dtype, "float32 or bfloat16 (default) weights")->check(CLI::IsMember({"float32", "bfloat16"}));
  app.add_option("--tokenizer-text", text_file, "a text file the tokenizer's BPE merges are learned from (default: "
                                                "the byte-level base vocabulary only)");
  app.add_option("--tokenizer-vocab", tokenizer_vocab, "tokenizer vocabulary size (default: the preset's)")
      ->check(CLI::Range(int64_t{258}, int64_t{1} << 20));
  app.add_option("--vocab-size", vocab_size, "embedding rows, at least the tokenizer's size (default: exactly the "
                                            "tokenizer's size; ids past the tokenizer can be generated but not decoded)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_flag("--preset-vocab", preset_vocab, "embedding rows as the preset's real model has (e.g. 100352 for phi4): "
                                               "real-shaped weights for memory and speed measurements");
  app.add_option("--max-shard-size", shard, "largest weight file, e.g. 5GB (default) or 500MiB; larger models are "
                                            "sharded with a model.safetensors.index.json as save_pretrained does")
      ->transform(CLI::AsSizeValue(false));
  bool config_only = false;
  app.add_flag("--config-only", config_only, "write config.json and the tokenizer without weights (enough for "
                                             "onn-train --plan)");
  app.add_flag("--list-presets", list, "print the presets and exit");
  return onn::tools::run_cli(app, "onn-init", argc, argv, [&] {
    if (list) {
      for (const auto& p : onn::model_presets()) std::cout << p.name << "\t" << p.description << "\n";
      return 0;
    }
    if (preset.empty() || out.empty()) throw onn::InvalidArgument("--preset and --out are required (see onn-init --help)");
    const onn::ModelPreset& p = onn::find_preset(preset);
    onn::InitOptions opt;
    opt.seed = seed;
    opt.dtype = dtype == "float32" ? onn::DType::f32 : onn::DType::bf16;
    opt.tokenizer_vocab = tokenizer_vocab;
    if (preset_vocab && vocab_size) throw onn::InvalidArgument("--vocab-size and --preset-vocab exclude each other");
    opt.vocab_size = preset_vocab ? p.config.vocab_size : vocab_size;
    if (shard == 0) throw onn::InvalidArgument("--max-shard-size must be positive");
    opt.max_shard_bytes = shard;
    opt.config_only = config_only;
    if (!text_file.empty()) opt.tokenizer_text = onn::read_file(text_file, size_t{1} << 32);
    onn::write_random_model(p, out, opt);
    std::cout << "onn-init: wrote " << out << " (" << p.name << ")\n";
    return 0;
  });
}
