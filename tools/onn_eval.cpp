// onn-eval: mean next-token loss and perplexity of a model over a text file or the {"text"}
// records of a JSONL, JSON, Parquet or CSV/TSV file. Each
// document is tokenized as the model's tokenizer does (BOS where it adds one), cut into
// windows of --seq-len tokens, and every next-token prediction inside a window counts.
#include <cmath>
#include <iostream>
#include <optional>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/tokenizer.h"
#include "runtime/error.h"
#include "tools/cli.h"
#include "tools/placement_flags.h"
#include "train/data.h"

namespace {

// The documents of a data file of any type onn-train reads (.jsonl, .json, .parquet, .csv,
// .tsv, or a folder of them): its {"text"} records; a .txt/.md file is one document. A record
// of another layout is refused by name.
std::vector<std::string> read_documents(const std::string& path) {
  std::vector<std::string> docs;
  onn::DataReport report;
  onn::for_each_example(path, {}, report, [&](onn::Example& e) {
    if (e.kind != onn::Example::Kind::text)
      throw onn::InvalidArgument(e.where + ": onn-eval reads {\"text\"} records (documents), not prompt/answer or "
                                 "chat records");
    docs.push_back(std::move(e.text));
    return true;
  });
  return docs;
}

// Windows of every document: --seq-len tokens each (the last may be shorter), two at least.
std::vector<std::vector<int32_t>> windows_of(const std::vector<std::string>& docs, const onn::Tokenizer& tok,
                                             int64_t window) {
  std::vector<std::vector<int32_t>> windows;
  for (const std::string& doc : docs) {
    const std::vector<int32_t> ids = tok.encode(doc, true);
    for (size_t s = 0; s < ids.size(); s += static_cast<size_t>(window)) {
      const size_t e = std::min(ids.size(), s + static_cast<size_t>(window));
      if (e - s >= 2) windows.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(s), ids.begin() + static_cast<std::ptrdiff_t>(e));
    }
  }
  return windows;
}

// The mean next-token loss over the windows, packed into forward passes of up to batch_tokens.
double mean_loss(onn::Context& ctx, const onn::PlacedModel& placed, const std::vector<std::vector<int32_t>>& windows,
                 int64_t batch_tokens, int64_t& count) {
  double total = 0;
  count = 0;
  for (size_t w = 0; w < windows.size();) {
    std::vector<int32_t> ids, pos, labels;
    std::vector<int64_t> lens;
    while (w < windows.size() && (ids.empty() || static_cast<int64_t>(ids.size() + windows[w].size()) <= batch_tokens)) {
      const auto& win = windows[w++];
      for (size_t i = 0; i < win.size(); ++i) {
        ids.push_back(win[i]);
        pos.push_back(static_cast<int32_t>(i));
        labels.push_back(i + 1 < win.size() ? win[i + 1] : onn::kIgnoreIndex);
      }
      lens.push_back(static_cast<int64_t>(win.size()));
    }
    const auto to_dev = [&](const std::vector<int32_t>& v) {
      onn::Tensor t = onn::Tensor::empty(onn::Shape{static_cast<int64_t>(v.size())}, onn::DType::i32);
      std::copy(v.begin(), v.end(), t.data_as<int32_t>());
      return t.to(ctx.device());
    };
    const int64_t n = static_cast<int64_t>(ids.size() - lens.size());  // predicted tokens
    total += placed.model->loss(ctx, to_dev(ids), to_dev(pos), onn::packed_seqs(ctx, lens), to_dev(labels),
                                placed.feed()) *
             static_cast<double>(n);
    count += n;
  }
  return total / static_cast<double>(count);
}

// The loss line (or JSON), with the unquantized model's loss and the difference when measured.
void report(double loss, int64_t count, std::optional<double> dense, onn::QuantFormat quantize, bool json) {
  if (json) {
    nlohmann::json j{{"loss", loss}, {"perplexity", std::exp(loss)}, {"tokens", count}};
    if (dense) j.update({{"unquantized_loss", *dense}, {"loss_difference", loss - *dense}});
    std::cout << j.dump() << "\n";
    return;
  }
  std::cout << "loss " << loss << "  perplexity " << std::exp(loss) << "  tokens " << count;
  if (dense)
    std::cout << "  (" << onn::quant_format_name(quantize) << "; unquantized loss " << *dense << ", difference "
              << loss - *dense << ")";
  std::cout << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"onn-eval: mean next-token loss and perplexity of a model over a text file (one document) or the "
               "{\"text\": ...} records of a .jsonl, .json, .parquet or .csv/.tsv file"};
  std::string model_dir, adapter_dir, data, device_flag;
  int64_t seq_len = 1024, batch_tokens = 8192;
  bool json = false;
  app.add_option("--model", model_dir, "a Hugging Face model folder (config.json, safetensors, tokenizer.json)")
      ->required();
  app.add_option("--adapter", adapter_dir, "a LoRA adapter folder (PEFT layout, e.g. onn-train's adapter/) applied "
                                        "to the model");
  app.add_option("--data", data, "a .txt/.md file (one document), a .jsonl/.json/.parquet/.csv/.tsv file of "
                                 "{\"text\"} records, or a folder of them")
      ->required();
  app.add_option("--seq-len", seq_len, "tokens per evaluation window (default 1024)")->check(CLI::Range(2, 1 << 20));
  app.add_option("--batch-tokens", batch_tokens, "tokens per forward pass (default 8192)")->check(CLI::Range(2, 1 << 24));
  app.add_option("--device", device_flag, "cpu or cuda[:N] (default: cuda when present)");
  app.add_flag("--json", json, "print {\"loss\":..., \"perplexity\":..., \"tokens\":N}");
  onn::PlacementFlags placement;
  bool plan = false;
  onn::tools::add_placement_flags(app, placement, {"the evaluation"});
  onn::tools::add_plan_flags(app, plan, placement, "print whether the model runs resident or streamed and the "
                             "predicted device memory, from config.json alone, and exit");
  return onn::tools::run_cli(app, "onn-eval", argc, argv, [&] {
    const onn::GenerationShape shape{1, seq_len, batch_tokens};
    if (plan) {
      const onn::Device device = device_flag.empty() ? onn::default_device() : onn::Device::parse(device_flag);
      const onn::GenerationPlan p = onn::generation_plan(device, model_dir, placement, shape);
      std::cout << (json ? p.to_json().dump() + "\n" : p.to_text());
      return 0;
    }
    onn::tools::check_host_ram(placement, plan);
    onn::Context ctx(onn::tools::device_from_flag(device_flag));
    const onn::Tokenizer tok = onn::Tokenizer::load(model_dir);
    const int64_t window = std::min(seq_len, onn::load_model_config(model_dir).max_position_embeddings);
    const std::vector<std::vector<int32_t>> windows = windows_of(read_documents(data), tok, window);
    if (windows.empty()) throw onn::InvalidArgument(data + ": no window of two or more tokens to evaluate");
    // The model (an adapter folded into its weights once, so the forward runs at full speed),
    // then, with --quantize, the unquantized model over the same windows.
    const auto evaluate = [&](const onn::PlacementFlags& f, int64_t& count) {
      const onn::PlacedModel placed = onn::place_for_generation(ctx, model_dir, f, shape);
      if (!adapter_dir.empty()) {
        if (placed.stream) throw onn::InvalidArgument("--adapter with a streamed model: merge it first with onn-merge");
        onn::merge_lora(ctx, *placed.model, onn::load_peft_adapter(ctx, *placed.model, adapter_dir));
      }
      return mean_loss(ctx, placed, windows, batch_tokens, count);
    };
    int64_t count = 0, dense_count = 0;
    const double loss = evaluate(placement, count);
    std::optional<double> dense;
    if (placement.quantize != onn::QuantFormat::none) {
      onn::PlacementFlags unquantized = placement;
      unquantized.quantize = onn::QuantFormat::none;
      dense = evaluate(unquantized, dense_count);
    }
    report(loss, count, dense, placement.quantize, json);
    return 0;
  });
}
