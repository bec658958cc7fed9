// LoRA adapters outside onn-train: an adapter trained by onn-train changes onn-eval's loss
// under --adapter; onn-merge folds it into a sharded HF folder whose loss and greedy text equal
// the unmerged model with --adapter (Llama GQA, and Phi-3 with its fused qkv/gate_up); an
// adapter for another model or a non-empty --out is refused with exit 2 and nothing written.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "runtime/json.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;
namespace fs = std::filesystem;

namespace {

const std::string kData = ONN_TEST_DATA_DIR;

double eval_loss(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {ONN_EVAL_PATH, "--data", kData + "/eval.txt", "--seq-len", "16", "--json",
                                   "--device", "cpu"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const ProcessResult r = run_process(argv);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return parse_json_strict(r.out, "onn-eval output")["loss"].get<double>();
}

std::string greedy(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {ONN_GENERATE_PATH, "--prompt", "The", "--temperature", "0", "--max-new-tokens",
                                   "12", "--device", "cpu"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const ProcessResult r = run_process(argv);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return r.out;
}

// A few LoRA steps at a high learning rate, so B is far from zero.
std::string train_adapter(TempDir& dir, const std::string& model, const std::string& name) {
  const std::string data = dir.file(name + ".jsonl");
  {
    std::ofstream f(data);
    for (int i = 0; i < 8; ++i)
      f << nlohmann::json{{"input", "The number " + std::to_string(i)}, {"output", " is " + std::to_string(i * 3)}}.dump()
        << "\n";
  }
  const std::string run = dir.file(name + "-run");
  const ProcessResult r = run_process({ONN_TRAIN_PATH, "--model", model, "--data", data, "--out", run, "--steps", "4",
                                       "--lr", "2e-2", "--lora-rank", "4", "--device", "cpu", "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return run + "/adapter";
}

}  // namespace

TEST_CASE("onn-merge and --adapter: the merged folder computes what the adapter does") {
  for (const std::string name : {"llama_gqa", "phi3"}) {
    CAPTURE(name);
    TempDir dir;
    const std::string model = kData + "/models/" + name;
    const std::string adapter = train_adapter(dir, model, name);
    const double base = eval_loss({"--model", model});
    const double adapted = eval_loss({"--model", model, "--adapter", adapter});
    CHECK(std::abs(adapted - base) > 1e-3);  // the adapter matters

    const std::string merged = dir.file("merged");
    const ProcessResult m = run_process({ONN_MERGE_PATH, "--model", model, "--adapter", adapter, "--out", merged,
                                         "--max-shard-size", "40KB", "--json"});
    REQUIRE_MESSAGE(m.exit_code == 0, m.err);
    const nlohmann::json report = parse_json_strict(m.out, "onn-merge output");
    CHECK(report["merged"].get<int>() == (name == "phi3" ? 2 * 4 : 2 * 7));  // every module, 2 layers
    CHECK(report["files"].size() > 1);
    CHECK(fs::exists(merged + "/model.safetensors.index.json"));
    CHECK(fs::exists(merged + "/config.json"));
    CHECK(fs::exists(merged + "/tokenizer.json"));
    CHECK(!fs::exists(merged + ".onn-merge.tmp"));
    CHECK(eval_loss({"--model", merged}) == doctest::Approx(adapted).epsilon(1e-6));
    CHECK(greedy({"--model", merged}) == greedy({"--model", model, "--adapter", adapter}));

    // A non-empty --out, the input folder itself, or an adapter of another model: exit 2,
    // one line, nothing written.
    const std::string other = kData + "/models/llama_tied";  // 4 KV heads: k_proj/v_proj differ
    const struct {
      std::vector<std::string> args;
      std::string message;
    } bad[] = {{{"--model", model, "--adapter", adapter, "--out", merged}, "already exists and is not empty"},
               {{"--model", model, "--adapter", adapter, "--out", model}, "is the input folder"},
               {{"--model", other, "--adapter", adapter, "--out", dir.file("x")}, "adapter_model.safetensors: tensor"}};
    for (const auto& b : bad) {
      CAPTURE(b.message);
      std::vector<std::string> argv = {ONN_MERGE_PATH};
      argv.insert(argv.end(), b.args.begin(), b.args.end());
      const ProcessResult r = run_process(argv);
      CHECK(r.exit_code == 2);
      CHECK(r.err.find(b.message) != std::string::npos);
      CHECK(r.err.find('\n') == r.err.size() - 1);
    }
    CHECK(!fs::exists(dir.file("x")));
    CHECK(!fs::exists(dir.file("x.onn-merge.tmp")));
    if (name == "llama_gqa") {
      const ProcessResult r = run_process({ONN_EVAL_PATH, "--model", other, "--adapter", adapter, "--data",
                                           kData + "/eval.txt", "--device", "cpu"});
      CHECK(r.exit_code == 2);
      CHECK(r.err.find("has shape") != std::string::npos);
    }
  }
}
