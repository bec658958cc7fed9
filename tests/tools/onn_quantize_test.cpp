// Quantized bases through the binaries as a user runs them, on the CPU: onn-quantize writes the
// bitsandbytes 4-bit layout (the codes transformers' own folder has) that every tool loads;
// onn-eval --quantize reports the difference to the unquantized model; onn-merge on a 4-bit
// folder writes dense weights without quantization_config; onn-generate runs on quantized bases,
// resident and streamed alike; refusals are one line, exit 2, nothing left behind.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>

#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;
namespace fs = std::filesystem;

namespace {

const std::string kQuantize = ONN_QUANTIZE_PATH;
const std::string kEval = ONN_EVAL_PATH;
const std::string kMerge = ONN_MERGE_PATH;
const std::string kGen = ONN_GENERATE_PATH;
const std::string kDense = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa";
const std::string kNf4 = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa_nf4";
const std::string kEvalData = std::string(ONN_TEST_DATA_DIR) + "/eval.txt";

nlohmann::json eval_json(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {kEval, "--data", kEvalData, "--seq-len", "16", "--device", "cpu", "--json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const ProcessResult r = run_process(argv);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return nlohmann::json::parse(r.out);
}

bool one_line_exit_2(const ProcessResult& r) {
  return r.exit_code == 2 && std::count(r.err.begin(), r.err.end(), '\n') == 1;
}

}  // namespace

TEST_CASE("onn-quantize writes the bitsandbytes 4-bit layout that onn-eval reads as --quantize nf4 computes it") {
  TempDir dir;
  const std::string out = dir.file("nf4");
  const ProcessResult q = run_process({kQuantize, "--model", kDense, "--out", out, "--json"});
  REQUIRE_MESSAGE(q.exit_code == 0, q.err);
  const nlohmann::json r = nlohmann::json::parse(q.out);
  CHECK(r["quantized"] == 14);  // seven projections in each of two layers
  CHECK(r["bytes_out"].get<uint64_t>() < r["bytes_in"].get<uint64_t>());
  const nlohmann::json cfg = nlohmann::json::parse(read_file(out + "/config.json", 1 << 20));
  CHECK(cfg["quantization_config"]["quant_method"] == "bitsandbytes");
  CHECK(cfg["quantization_config"]["bnb_4bit_quant_type"] == "nf4");
  CHECK(cfg["quantization_config"]["bnb_4bit_use_double_quant"] == true);
  CHECK(fs::exists(out + "/tokenizer.json"));
  // The codes of every weight are those of the folder transformers + bitsandbytes wrote.
  const SafetensorsFile ours = SafetensorsFile::open(out + "/model.safetensors");
  const SafetensorsFile theirs = SafetensorsFile::open(kNf4 + "/model.safetensors");
  CHECK(ours.tensors().size() == theirs.tensors().size());
  for (const TensorInfo& t : theirs.tensors()) {
    CAPTURE(t.name);
    REQUIRE(ours.find(t.name));
    if (t.name.ends_with("bitsandbytes__nf4")) {  // the JSON, padded with spaces to a fixed size
      const auto text = [](const SafetensorsFile& f, const TensorInfo& i) {
        const auto b = f.bytes(i);
        return nlohmann::json::parse(std::string(b.begin(), b.end()));
      };
      nlohmann::json a = text(ours, ours.info(t.name)), b = text(theirs, t);
      CHECK(std::abs(a["nested_offset"].get<double>() - b["nested_offset"].get<double>()) < 1e-6);
      a.erase("nested_offset");
      b.erase("nested_offset");
      CHECK(a == b);
      continue;
    }
    CHECK(ours.info(t.name).shape == t.shape);
    CHECK(ours.info(t.name).dtype == t.dtype);
    if (t.name.ends_with("proj.weight")) CHECK(ours.bytes(ours.info(t.name)).size() == theirs.bytes(t).size());
    if (t.name.ends_with("proj.weight"))
      CHECK(std::memcmp(ours.bytes(ours.info(t.name)).data(), theirs.bytes(t).data(), theirs.bytes(t).size()) == 0);
  }
  // The folder evaluates exactly as the unquantized folder quantized while loading.
  const nlohmann::json folder = eval_json({"--model", out}), loading = eval_json({"--model", kDense, "--quantize", "nf4"});
  CHECK(folder["loss"] == loading["loss"]);
  CHECK(!folder.contains("unquantized_loss"));  // a quantized folder has no unquantized weights to compare
}

TEST_CASE("onn-eval --quantize reports the loss difference to the unquantized model, resident and streamed") {
  const nlohmann::json dense = eval_json({"--model", kDense});
  for (const char* f : {"nf4", "int8", "fp8"}) {
    CAPTURE(f);
    const nlohmann::json q = eval_json({"--model", kDense, "--quantize", f});
    CHECK(q["unquantized_loss"] == dense["loss"]);
    CHECK(q["loss_difference"].get<double>() == q["loss"].get<double>() - dense["loss"].get<double>());
    CHECK(q["loss"] != dense["loss"]);
    CHECK(std::abs(q["loss_difference"].get<double>()) < 0.05);
    CHECK(q["tokens"] == dense["tokens"]);
    // Streamed (the quantized parts copied chunk by chunk): the same loss.
    CHECK(eval_json({"--model", kDense, "--quantize", f, "--stream", "on"})["loss"] == q["loss"]);
  }
}

TEST_CASE("onn-merge on a bitsandbytes 4-bit folder writes dense weights that evaluate as the adapter does") {
  TempDir dir;
  const std::string adapter = kNf4 + "/qlora_reference", out = dir.file("merged");
  const ProcessResult m = run_process({kMerge, "--model", kNf4, "--adapter", adapter, "--out", out});
  REQUIRE_MESSAGE(m.exit_code == 0, m.err);
  const nlohmann::json cfg = nlohmann::json::parse(read_file(out + "/config.json", 1 << 20));
  CHECK(!cfg.contains("quantization_config"));
  const SafetensorsFile f = SafetensorsFile::open(out + "/model.safetensors");
  const TensorInfo& down = f.info("model.layers.0.mlp.down_proj.weight");
  CHECK(down.dtype == DType::f32);  // the dtype bitsandbytes' quant_state records
  CHECK(down.shape == std::vector<int64_t>{64, 96});
  for (const TensorInfo& t : f.tensors()) CHECK(t.name.find("absmax") == std::string::npos);
  const double merged = eval_json({"--model", out})["loss"].get<double>();
  const double adapted = eval_json({"--model", kNf4, "--adapter", adapter})["loss"].get<double>();
  const double base = eval_json({"--model", kNf4})["loss"].get<double>();
  CHECK(std::abs(merged - adapted) / adapted < 1e-6);
  CHECK(std::abs(adapted - base) > 1e-4);
}

TEST_CASE("onn-generate on quantized bases: resident and streamed give the same text") {
  for (const std::vector<std::string>& model : {std::vector<std::string>{"--model", kNf4},
                                                std::vector<std::string>{"--model", kDense, "--quantize", "int8"}}) {
    CAPTURE(model.back());
    std::vector<std::string> argv = {kGen, "--prompt", "The", "--device", "cpu", "--max-new-tokens", "8",
                                     "--temperature", "0"};
    argv.insert(argv.end(), model.begin(), model.end());
    const ProcessResult resident = run_process(argv);
    REQUIRE_MESSAGE(resident.exit_code == 0, resident.err);
    argv.insert(argv.end(), {"--stream", "on"});
    const ProcessResult streamed = run_process(argv);
    REQUIRE_MESSAGE(streamed.exit_code == 0, streamed.err);
    CHECK(resident.out == streamed.out);
    CHECK(!resident.out.empty());
  }
}

TEST_CASE("onn-quantize refusals: one line, exit 2, nothing written") {
  TempDir dir;
  const std::string out = dir.file("out");
  const ProcessResult int8 = run_process({kQuantize, "--model", kDense, "--format", "int8", "--out", out});
  CHECK(one_line_exit_2(int8));
  CHECK(int8.err.find("applied while loading") != std::string::npos);
  const ProcessResult again = run_process({kQuantize, "--model", kNf4, "--out", out});
  CHECK(one_line_exit_2(again));
  CHECK(again.err.find("already quantized") != std::string::npos);
  fs::create_directories(dir.file("full"));
  write_bytes(dir.file("full") + "/x", {1});
  const ProcessResult full = run_process({kQuantize, "--model", kDense, "--out", dir.file("full")});
  CHECK(one_line_exit_2(full));
  CHECK(!fs::exists(out));
  for (const auto& e : fs::directory_iterator(dir.path())) CHECK(e.path().filename().string().find("tmp") == std::string::npos);
  // Formats the flags do not know: one line, exit 2.
  const ProcessResult flag = run_process({kEval, "--model", kDense, "--data", kEvalData, "--quantize", "q3"});
  CHECK(one_line_exit_2(flag));
  CHECK(flag.err.find("--quantize") != std::string::npos);
  const ProcessResult fmt = run_process({kQuantize, "--model", kDense, "--format", "gptq", "--out", out});
  CHECK(one_line_exit_2(fmt));
  CHECK(fmt.err.find("--format") != std::string::npos);
  CHECK(!fs::exists(out));
  // An unknown quantization method in config.json is refused by every tool that loads it.
  const std::string gptq = dir.file("gptq");
  fs::create_directories(gptq);
  nlohmann::json cfg = nlohmann::json::parse(read_file(kDense + "/config.json", 1 << 20));
  cfg["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}};
  write_file_atomic(gptq + "/config.json", cfg.dump());
  fs::copy_file(kDense + "/model.safetensors", gptq + "/model.safetensors");
  fs::copy_file(kDense + "/tokenizer.json", gptq + "/tokenizer.json");
  const ProcessResult ev = run_process({kEval, "--model", gptq, "--data", kEvalData, "--device", "cpu"});
  CHECK(one_line_exit_2(ev));
  CHECK(ev.err.find("quant_method\" is \"gptq\"") != std::string::npos);
}

TEST_CASE("onn-info shows each tensor's quantization and the quantized bytes, and a lying quant_state exits 2") {
  const ProcessResult r = run_process({ONN_INFO_PATH, kNf4, "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const nlohmann::json j = nlohmann::json::parse(r.out);
  CHECK(j["quantization"]["format"] == "nf4");
  CHECK(j["quantization"]["weights"] == 14);
  CHECK(j["quantization"]["weight_parameters"] == 2 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 96));
  size_t weights = 0, parts = 0;
  for (const auto& t : j["tensors"]) {
    if (!t.contains("quantization")) continue;
    if (t["name"] == "model.layers.0.mlp.down_proj.weight") CHECK(t["quantization"] == "nf4 (64, 96)");
    (t["quantization"] == "nf4 part" ? parts : weights) += 1;
  }
  CHECK(weights == 14);
  CHECK(parts == 14 * 5);
  const ProcessResult text = run_process({ONN_INFO_PATH, kNf4});
  CHECK(text.out.find("quantization: 14 weight(s) in nf4") != std::string::npos);

  // A quant_state whose shape disagrees with the packed bytes.
  TempDir dir;
  const SafetensorsFile f = SafetensorsFile::open(kNf4 + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> t;
  for (const TensorInfo& i : f.tensors()) t.emplace_back(i.name, clone(f.tensor(i.name)));
  for (auto& [n, x] : t)
    if (n == "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4") {
      const std::string js = R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [96, 96]})";
      x = Tensor::empty(Shape{static_cast<int64_t>(js.size())}, DType::u8);
      std::memcpy(x.data(), js.data(), js.size());
    }
  write_safetensors(dir.file("model.safetensors"), t);
  const ProcessResult bad = run_process({ONN_INFO_PATH, dir.file("model.safetensors")});
  CHECK(one_line_exit_2(bad));
  CHECK(bad.err.find("model.layers.0.mlp.up_proj.weight") != std::string::npos);
}
