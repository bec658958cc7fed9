// onn-quantize: writes an unquantized Hugging Face folder once as a bitsandbytes 4-bit (nf4)
// folder, so later runs read the quantized weights instead of quantizing while loading.
#include <iostream>

#include <nlohmann/json.hpp>

#include "model/quantized.h"
#include "runtime/error.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"onn-quantize: write a model folder's projection weights in bitsandbytes' 4-bit nf4 layout (QLoRA's "
               "NormalFloat4, blocks of 64, double-quantized absmax): a folder that onn-train, onn-generate, "
               "onn-eval and transformers + bitsandbytes load as it is. Embeddings, norms and the LM head stay as "
               "they are. int8 and fp8 are applied while loading instead (--quantize on the other tools)"};
  std::string model_dir, out_dir, format = "nf4";
  uint64_t max_shard = 5'000'000'000ULL;
  bool json = false;
  app.add_option("--model", model_dir, "the unquantized model folder (config.json, safetensors)")->required();
  app.add_option("--format", format, "nf4 (the only layout written)")->check(CLI::IsMember({"nf4", "int8", "fp8"}));
  app.add_option("--out", out_dir, "the quantized model folder to write (new, or empty)")->required();
  app.add_option("--max-shard-size", max_shard, "largest weight file, e.g. 5GB (default), 500MB")
      ->transform(CLI::AsSizeValue(false));
  app.add_flag("--json", json, "print {\"tensors\":N,\"quantized\":M,\"bytes_in\":...,\"bytes_out\":...} when done");
  return onn::tools::run_cli(app, "onn-quantize", argc, argv, [&] {
    if (max_shard == 0) throw onn::InvalidArgument("--max-shard-size must be above 0");
    const onn::QuantizeResult r =
        onn::quantize_folder(model_dir, out_dir, *onn::parse_quant_format(format), max_shard);
    if (json) {
      std::cout << nlohmann::json{{"tensors", r.tensors}, {"quantized", r.quantized}, {"bytes_in", r.bytes_in},
                                  {"bytes_out", r.bytes_out}, {"files", r.files}, {"out", out_dir}}
                       .dump()
                << "\n";
    } else {
      std::cout << "onn-quantize: " << r.quantized << " weights in nf4, " << r.bytes_in << " -> " << r.bytes_out
                << " bytes; model in " << out_dir << "\n";
    }
    return 0;
  });
}
