// onn-merge: folds a PEFT LoRA adapter into its base model and writes a Hugging Face folder
// (sharded safetensors, config and tokenizer files) that transformers and every ONN tool load.
#include <iostream>

#include "model/lora.h"
#include "runtime/error.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"onn-merge: fold a LoRA adapter (PEFT layout, e.g. onn-train's adapter/) into its base model and "
               "write a new Hugging Face model folder; tensors keep their dtype, one in memory at a time. A "
               "quantized base (a bitsandbytes 4-bit folder) is merged into its dequantized weights and written "
               "dense, each weight in the dtype it had before quantization (bf16 for the usual -bnb-4bit folders), "
               "without quantization_config"};
  std::string model_dir, adapter_dir, out_dir;
  uint64_t max_shard = 5'000'000'000ULL;
  bool json = false;
  app.add_option("--model", model_dir, "the base model folder the adapter was trained on")->required();
  app.add_option("--adapter", adapter_dir, "the adapter folder (adapter_config.json, adapter_model.safetensors)")
      ->required();
  app.add_option("--out", out_dir, "the merged model folder to write (new, or empty)")->required();
  app.add_option("--max-shard-size", max_shard, "largest weight file, e.g. 5GB (default), 500MB")
      ->transform(CLI::AsSizeValue(false));
  app.add_flag("--json", json, "print {\"tensors\":N,\"merged\":M,\"files\":[...]} when done");
  return onn::tools::run_cli(app, "onn-merge", argc, argv, [&] {
    if (max_shard == 0) throw onn::InvalidArgument("--max-shard-size must be above 0");
    const onn::MergeResult r = onn::merge_adapter_folder(model_dir, adapter_dir, out_dir, max_shard);
    if (json) {
      std::cout << nlohmann::json{{"tensors", r.tensors}, {"merged", r.merged}, {"files", r.files}, {"out", out_dir}}.dump()
                << "\n";
    } else {
      std::cout << "onn-merge: " << r.merged << " of " << r.tensors << " tensors merged; model in " << out_dir << "\n";
    }
    return 0;
  });
}
