// The built-in demo of onn-train.
#include "tools/train_demo.h"

#include <filesystem>
#include <fstream>
#include <iostream>

#include "kernels/counter_rng.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/tokenizer.h"
#include "runtime/error.h"
#include "runtime/json.h"
#include "tools/cli.h"
#include "train/trainer.h"

namespace onn::tools {

namespace {

namespace fs = std::filesystem;

struct Problem {
  std::string input, output;
};

// Every a OP b for a, b < 50 (subtraction: a >= b), split into train and held-out by a seeded
// shuffle.
void make_task(char op, std::vector<Problem>& train, std::vector<Problem>& heldout, size_t n_heldout) {
  std::vector<Problem> all;
  for (int a = 0; a < 50; ++a)
    for (int b = 0; b < 50; ++b) {
      if (op == '-' && a < b) continue;
      all.push_back({std::to_string(a) + op + std::to_string(b) + "=", std::to_string(op == '+' ? a + b : a - b)});
    }
  for (size_t i = all.size(); i > 1; --i) std::swap(all[i - 1], all[counter_hash(op, i) % i]);
  heldout.assign(all.begin(), all.begin() + static_cast<long>(n_heldout));
  train.assign(all.begin() + static_cast<long>(n_heldout), all.end());
}

void write_jsonl(const fs::path& path, const std::vector<Problem>& ps) {
  std::ofstream f(path);
  for (const Problem& p : ps) f << nlohmann::json{{"input", p.input}, {"output", p.output}}.dump() << "\n";
  if (!f) throw IoError(path.string() + ": cannot write");
}

// Exact-match accuracy of greedy answers; prints the first `show` of them.
double accuracy(Context& ctx, const LlamaModel& model, const Tokenizer& tok, const std::vector<Problem>& ps,
                size_t show, std::ostream& out) {
  GenerateOptions g;
  g.sampling.temperature = 0;
  g.max_new_tokens = 4;
  size_t right = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    const GenerateResult r = generate(ctx, model, tok, tok.encode(ps[i].input, true), g);
    const bool ok = r.text == ps[i].output;
    right += ok;
    if (i < show) out << "    " << ps[i].input << r.text << (ok ? "    ok" : "    (want " + ps[i].output + ")") << "\n";
  }
  return static_cast<double>(right) / static_cast<double>(ps.size());
}

}  // namespace

int run_train_demo(const std::string& out_dir, const std::string& device, bool json) {
  fs::path out = out_dir;
  if (out.empty()) {
    out = "onn-demo";
    for (int i = 2; fs::exists(out); ++i) out = "onn-demo-" + std::to_string(i);
  }
  const fs::path data = out / "demo-data";
  fs::create_directories(data);
  std::vector<Problem> add_train, add_held, sub_train, sub_held;
  make_task('+', add_train, add_held, 200);
  make_task('-', sub_train, sub_held, 100);
  write_jsonl(data / "add-train.jsonl", add_train);
  write_jsonl(data / "add-heldout.jsonl", add_held);
  write_jsonl(data / "sub-train.jsonl", sub_train);
  write_jsonl(data / "sub-heldout.jsonl", sub_held);
  std::ostream& say = json ? std::cerr : std::cout;
  const auto events = [&](const nlohmann::ordered_json& e) {
    if (json) std::cout << e.dump() << "\n" << std::flush;
    const std::string type = e["type"];
    if (type == "val")
      say << "  step " << e["step"].get<int64_t>() << ": held-out loss " << e["loss"].get<double>() << "\n" << std::flush;
  };
  device_from_flag(device);

  say << "onn-train demo: 1. a tiny LLaMA (2 layers, 64 wide) trained from scratch on " << add_train.size()
      << " additions like 12+7=19, " << add_held.size() << " held out\n" << std::flush;
  TrainConfig base;
  base.init_preset = "tiny";
  base.init_tokenizer_vocab = 258;  // single characters: digits stay digits
  base.data = (data / "add-train.jsonl").string();
  base.val_data = (data / "add-heldout.jsonl").string();
  base.out_dir = (out / "base").string();
  base.device = device;
  base.seq_len = 64;
  base.micro_batch = 8;
  base.steps = 2400;
  base.lr = 3e-3;
  base.min_lr = 3e-4;
  base.warmup_steps = 30;
  base.weight_decay = 0.01;
  base.eval_every = 600;
  base.save_every = 1200;
  base.seed = 1;
  const TrainResult br = train(base, false, events);
  Context ctx(device.empty() ? default_device() : Device::parse(device));
  {
    const LlamaModel model = LlamaModel::load(ctx, br.output);
    const Tokenizer tok = Tokenizer::load(br.output);
    say << "  held-out answers (greedy):\n";
    const double acc = accuracy(ctx, model, tok, add_held, 6, say);
    say << "  held-out exact-match accuracy: " << 100.0 * acc << "% (" << add_held.size()
        << " problems the model never saw; chance is about 1%)\n  model: " << br.output << "\n" << std::flush;
    if (json)
      std::cout << nlohmann::json{{"type", "demo"}, {"task", "addition"}, {"heldout_accuracy", acc},
                                  {"output", br.output}}.dump() << "\n";
  }

  say << "onn-train demo: 2. a LoRA adapter (rank 8) teaching that model subtraction, " << sub_train.size()
      << " problems, " << sub_held.size() << " held out\n" << std::flush;
  TrainConfig lora;
  lora.model_dir = br.output;
  lora.data = (data / "sub-train.jsonl").string();
  lora.val_data = (data / "sub-heldout.jsonl").string();
  lora.out_dir = (out / "lora").string();
  lora.device = device;
  lora.seq_len = 64;
  lora.micro_batch = 8;
  lora.steps = 1200;
  lora.lr = 3e-3;
  lora.warmup_steps = 20;
  lora.lora.rank = 8;
  lora.lora.alpha = 16;
  lora.eval_every = 600;
  lora.seed = 2;
  const TrainResult lr = train(lora, false, events);
  {
    LlamaModel model = LlamaModel::load(ctx, br.output);
    const Tokenizer tok = Tokenizer::load(br.output);
    const double before = accuracy(ctx, model, tok, sub_held, 0, say);
    const LoraAdapter ad = load_peft_adapter(ctx, model, lr.output);
    merge_lora(ctx, model, ad);
    say << "  held-out answers with the adapter:\n";
    const double after = accuracy(ctx, model, tok, sub_held, 4, say);
    say << "  held-out subtraction accuracy: " << 100.0 * before << "% without the adapter, " << 100.0 * after
        << "% with it\n  adapter (PEFT layout): " << lr.output << "\n" << std::flush;
    if (json)
      std::cout << nlohmann::json{{"type", "demo"}, {"task", "subtraction"}, {"heldout_accuracy_base", before},
                                  {"heldout_accuracy", after}, {"output", lr.output}}.dump() << "\n";
  }
  say << "onn-train demo: run saved in " << out.string() << "\n";
  return 0;
}

}  // namespace onn::tools
