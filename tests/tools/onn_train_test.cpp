// onn-train as a user runs it, on the CPU: a LoRA run's events, checkpoints and PEFT adapter;
// bad data and bad flags (one line, exit 2, nothing written); kill -9 at random moments and
// --resume giving bitwise the same losses and weights as an uninterrupted run (LoRA with
// dropout and gradient accumulation, and full training from an onn-init preset); the demo.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <tuple>

#include "kernels/matmul.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"
#include "support/parquet_writer.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;
namespace fs = std::filesystem;

namespace {

const std::string kTrain = ONN_TRAIN_PATH;
const std::string kModel = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa";

std::string write_data(TempDir& dir, int n) {
  const std::string path = dir.file("data.jsonl");
  std::ofstream f(path);
  for (int i = 0; i < n; ++i)
    f << nlohmann::json{{"input", "Q" + std::to_string(i) + " is"}, {"output", " A" + std::to_string(i * 7 % 13)}}.dump()
      << "\n";
  return path;
}

std::vector<nlohmann::json> events_of(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (l.empty()) continue;
    // A kill can tear the last line a run wrote; the next run starts a fresh line.
    nlohmann::json e = nlohmann::json::parse(l, nullptr, false);
    if (!e.is_discarded()) out.push_back(std::move(e));
  }
  return out;
}

// step -> loss as printed (the last report of each step: a resumed run repeats some).
std::map<int64_t, std::string> step_losses(const std::string& log) {
  std::map<int64_t, std::string> m;
  for (const nlohmann::json& e : events_of(log))
    if (e["type"] == "step") m[e["step"].get<int64_t>()] = e["loss"].dump();
  return m;
}

std::string slurp(const std::string& p) { return read_file(p, size_t{1} << 30); }

}  // namespace

TEST_CASE("onn-train LoRA: events, checkpoints kept, and a PEFT adapter") {
  TempDir dir;
  const std::string data = write_data(dir, 24), out = dir.file("run");
  const ProcessResult r = run_process({kTrain, "--model", kModel, "--data", data, "--out", out, "--device", "cpu",
                                       "--steps", "6", "--save-every", "2", "--keep-last", "2", "--eval-every", "3",
                                       "--val-split", "0.25", "--lora-rank", "4", "--lora-targets", "q,v,down",
                                       "--micro-batch", "16", "--seq-len", "32", "--lr", "1e-2", "--json"});
  REQUIRE(r.exit_code == 0);
  const std::vector<nlohmann::json> ev = events_of(r.out);
  REQUIRE(ev.size() > 8);
  CHECK(ev.front()["type"] == "init");
  CHECK(ev.front()["mode"] == "lora");
  CHECK(ev.front()["data"]["val_documents"] == 6);
  CHECK(ev.front()["parameters_trainable"].get<int64_t>() < ev.front()["parameters_total"].get<int64_t>() / 4);
  CHECK(ev.back()["type"] == "done");
  std::vector<double> losses;
  int vals = 0, ckpts = 0;
  for (const nlohmann::json& e : ev) {
    if (e["type"] == "step") {
      losses.push_back(e["loss"].get<double>());
      for (const char* f : {"lr", "grad_norm", "tokens_per_s", "ms", "mem_bytes"}) CHECK(e.contains(f));
    }
    vals += e["type"] == "val";
    ckpts += e["type"] == "checkpoint";
  }
  REQUIRE(losses.size() == 6);
  CHECK(losses.back() < losses.front());  // one micro-batch holds every document: it learns them
  CHECK(vals == 2);
  CHECK(ckpts == 3);
  // The last two checkpoints remain, `latest` names the newest.
  CHECK(!fs::exists(out + "/checkpoints/step-00000002"));
  CHECK(fs::exists(out + "/checkpoints/step-00000004/adapter/adapter_model.safetensors"));
  CHECK(slurp(out + "/checkpoints/latest") == "step-00000006\n");
  const nlohmann::json state = read_json_file(out + "/checkpoints/step-00000006/trainer_state.json");
  CHECK(state["step"] == 6);
  CHECK(state["config"]["lora_rank"] == 4);
  CHECK(state.contains("rng"));
  const SafetensorsFile opt = SafetensorsFile::open(out + "/checkpoints/step-00000006/optimizer.safetensors");
  CHECK(opt.find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.exp_avg") != nullptr);
  // The adapter: PEFT names, shapes and config.
  const SafetensorsFile ad = SafetensorsFile::open(out + "/adapter/adapter_model.safetensors");
  CHECK(ad.tensors().size() == 2 * 3 * 2);  // A and B, 3 targets, 2 layers
  CHECK(ad.info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").shape[1] == 4);
  const nlohmann::json cfg = read_json_file(out + "/adapter/adapter_config.json");
  CHECK(cfg["peft_type"] == "LORA");
  CHECK(cfg["target_modules"] == nlohmann::json::array({"down_proj", "q_proj", "v_proj"}));
  CHECK(cfg["base_model_name_or_path"] == fs::absolute(kModel).string());
  // A second run into the same folder is refused; the tokenized data was cached.
  CHECK(fs::exists(out + "/data/train-corpus.safetensors"));
  const ProcessResult again = run_process({kTrain, "--model", kModel, "--data", data, "--out", out, "--device", "cpu"});
  CHECK(again.exit_code == 2);
  CHECK(again.err.find("already holds a run; continue it with --resume") != std::string::npos);
  // --resume keeps the run's configuration: a training flag beside it is refused, not ignored.
  const ProcessResult lr = run_process({kTrain, "--resume", out, "--lr", "1e-3", "--device", "cpu"});
  CHECK(lr.exit_code == 2);
  CHECK(lr.err.find("--lr cannot be given with it") != std::string::npos);
  CHECK(read_json_file(out + "/checkpoints/step-00000006/trainer_state.json")["step"] == 6);
}

TEST_CASE("onn-train: bad data and bad flags give one line and exit 2, and write nothing") {
  TempDir dir;
  const std::string good = write_data(dir, 4);
  const auto file = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir.file(name)) << text;
    return dir.file(name);
  };
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--data", file("a.jsonl", "{\"input\":\"x\",\"output\":\"y\"}\n{\"input\":\"x\"}\n")},
       "a.jsonl:2: field \"output\" missing"},
      {{"--data", file("b.jsonl", "{\"input\":\"x\",\"output\":5}\n")}, "b.jsonl:1: field \"output\" must be a string"},
      {{"--data", file("c.jsonl", "{oops\n")}, "c.jsonl:1: invalid JSON"},
      {{"--data", file("d.json", "{}")}, "d.json: a .json data file must hold an array"},
      {{"--data", file("e.xml", "<a/>")}, "unsupported data file type \".xml\""},
      {{"--data", file("f.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n")},
       "f.jsonl:1: field \"messages\" has no assistant turn"},
      {{"--data", dir.file("missing.jsonl")}, "no such file"},
      {{"--data", good, "--lora-targets", "q,attn"}, "unknown LoRA target \"attn\""},
      {{"--data", good, "--train-layers", "0-5"}, "layer 5 is past the model's 2 layers"},
      {{"--data", good, "--lora-rank", "0"}, "LoRA rank"},
      {{"--data", good, "--schedule", "step"}, "--schedule must be cosine, linear or constant"},
      {{"--data", good, "--val-split", "1.5"}, "--val-split must be in [0, 1)"},
      {{"--data", good, "--seq-len", "100000"}, "longer than the model's max_position_embeddings"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.message);
    const std::string out = dir.file("run");
    std::vector<std::string> argv = {kTrain, "--model", kModel, "--out", out, "--device", "cpu", "--steps", "1"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const ProcessResult r = run_process(argv);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(c.message) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);
    CHECK(!fs::exists(out + "/checkpoints"));
    CHECK(!fs::exists(out + "/adapter"));
    fs::remove_all(out);
  }
  // Skipping bad records: the run goes on and says which were left out.
  const std::string mixed = file("mixed.jsonl", "{\"input\":\"a\",\"output\":\"b\"}\n{\"input\":\"c\"}\n"
                                                "{\"input\":\"d\",\"output\":\"e\"}\n");
  const ProcessResult r = run_process({kTrain, "--model", kModel, "--data", mixed, "--out", dir.file("skip"), "--device",
                                       "cpu", "--steps", "1", "--skip-bad-records", "--json"});
  REQUIRE(r.exit_code == 0);
  const nlohmann::json init = events_of(r.out).front();
  CHECK(init["data"]["records"] == 2);
  CHECK(init["data"]["skipped_records"] == nlohmann::json::array({mixed + ":2: field \"output\" missing"}));
}

TEST_CASE("kill -9 at random moments, then --resume: bitwise the same losses and weights as an uninterrupted run") {
  TempDir dir;
  const std::string data = write_data(dir, 40);
  struct Mode {
    std::string name, weights;
    std::vector<std::string> args;
  };
  const std::vector<Mode> modes = {
      {"lora", "adapter/adapter_model.safetensors",
       {"--model", kModel, "--lora-rank", "4", "--lora-dropout", "0.1", "--grad-accum", "2", "--micro-batch", "2"}},
      {"full", "model/model.safetensors",
       {"--init", "tiny", "--init-tokenizer-vocab", "300", "--micro-batch", "3", "--weight-decay", "0.1"}},
      {"qlora", "adapter/adapter_model.safetensors",
       {"--model", kModel, "--quantize", "nf4", "--lora-rank", "4", "--lora-dropout", "0.1", "--micro-batch", "2"}},
  };
  std::mt19937 rng(2024);
  for (const Mode& m : modes) {
    CAPTURE(m.name);
    const auto command = [&](const std::string& out) {
      std::vector<std::string> a = {kTrain, "--data", data, "--out", out, "--device", "cpu", "--steps", "14",
                                    "--save-every", "1", "--keep-last", "2", "--seq-len", "16", "--lr", "5e-3",
                                    "--warmup-steps", "3", "--val-split", "0.1", "--eval-every", "5",
                                    "--log-file", out + ".log"};
      a.insert(a.end(), m.args.begin(), m.args.end());
      return a;
    };
    const std::string ref = dir.file(m.name + "-ref");
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(run_process(command(ref)).exit_code == 0);
    const int span_ms = static_cast<int>(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());

    // Up to three kills at random moments, then a run to the end.
    const std::string run = dir.file(m.name + "-killed");
    KilledRun k;
    k.start = command;
    k.resume = [](const std::string& out) {
      return std::vector<std::string>{kTrain, "--resume", out, "--device", "cpu", "--log-file", out + ".log"};
    };
    k.killed_after = run_process_killed_after;
    k.clean_stderr = true;
    const KilledRunResult killed = run_killed_and_resumed(k, run, span_ms, rng);
    REQUIRE(killed.finished);
    CHECK(killed.kills >= 1);
    const auto want = step_losses(slurp(ref + ".log")), got = step_losses(slurp(run + ".log"));
    CHECK(want.size() == 14);
    CHECK(got == want);
    CHECK(slurp(ref + "/" + m.weights) == slurp(run + "/" + m.weights));
  }
}

#if !defined(__SANITIZE_ADDRESS__)
TEST_CASE("the README's demo learns: held-out accuracy far above chance") {
  TempDir dir;
  const ProcessResult r = run_process({kTrain, "--demo", "--out", dir.file("demo"), "--device", "cpu", "--json"});
  REQUIRE(r.exit_code == 0);
  double add = -1, sub_base = -1, sub = -1;
  for (const nlohmann::json& e : events_of(r.out))
    if (e["type"] == "demo") {
      if (e["task"] == "addition") add = e["heldout_accuracy"];
      if (e["task"] == "subtraction") sub_base = e["heldout_accuracy_base"], sub = e["heldout_accuracy"];
    }
  CHECK(add > 0.8);
  CHECK(sub > 0.5);
  CHECK(sub > sub_base + 0.4);  // the adapter taught it
  CHECK(fs::exists(dir.file("demo") + "/lora/adapter/adapter_config.json"));
}
#endif

TEST_CASE("onn-train --plan: from config.json alone, a Phi-4-shaped plan under 4 GiB, and a refused budget") {
  TempDir dir;
  const std::string cfg = dir.file("phi4");
  REQUIRE(run_process({ONN_INIT_PATH, "--preset", "phi4", "--preset-vocab", "--config-only", "--out", cfg}).exit_code == 0);
  CHECK(!fs::exists(cfg + "/model.safetensors"));
  const std::vector<std::string> base = {kTrain, "--plan", "--model", cfg, "--lora-rank", "16", "--device", "cuda",
                                         "--host-ram", "64GiB", "--json"};
  std::vector<std::string> argv = base;
  argv.insert(argv.end(), {"--vram-budget", "4GiB"});
  const ProcessResult ok = run_process(argv);
  REQUIRE_MESSAGE(ok.exit_code == 0, ok.err);
  const nlohmann::json plan = nlohmann::json::parse(ok.out);
  CHECK(plan["type"] == "plan");
  CHECK(plan["streamed"] == true);
  CHECK(plan["predicted_peak_bytes"].get<uint64_t>() <= uint64_t{4} << 30);
  // Without --batch-rows the plan keeps the run's own split; with it the planner splits.
  CHECK(plan["micro_batch"] == 4);
  CHECK(plan["grad_accum"] == 1);
  argv = base;
  argv.insert(argv.end(), {"--vram-budget", "8GiB", "--batch-rows", "16"});
  const ProcessResult split = run_process(argv);
  REQUIRE_MESSAGE(split.exit_code == 0, split.err);
  const nlohmann::json sp = nlohmann::json::parse(split.out);
  CHECK(sp["micro_batch"].get<int64_t>() * sp["grad_accum"].get<int64_t>() == 16);
  CHECK(sp["micro_batch"].get<int64_t>() > 1);
  argv.insert(argv.end(), {"--micro-batch", "2"});
  const ProcessResult both = run_process(argv);
  CHECK(both.exit_code == 2);
  CHECK(both.err.find("excludes") != std::string::npos);
  argv = base;
  argv.insert(argv.end(), {"--vram-budget", "1GiB"});
  const ProcessResult no = run_process(argv);
  CHECK(no.exit_code == 2);
  CHECK(no.err.find("would fit with a budget of") != std::string::npos);
}

TEST_CASE("onn-train on a bitsandbytes 4-bit folder: QLoRA, the init event names the base, the adapter evaluates") {
  TempDir dir;
  const std::string data = write_data(dir, 24), out = dir.file("run");
  const std::string nf4 = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa_nf4";
  const ProcessResult r = run_process({kTrain, "--model", nf4, "--data", data, "--out", out, "--device", "cpu",
                                       "--steps", "4", "--lora-rank", "4", "--micro-batch", "4", "--seq-len", "32",
                                       "--lr", "1e-2", "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const std::vector<nlohmann::json> ev = events_of(r.out);
  REQUIRE(!ev.empty());
  CHECK(ev.front()["type"] == "init");
  CHECK(ev.front()["base"] == "nf4");
  CHECK(ev.front()["parameters_total"].get<int64_t>() > 100000);
  const auto losses = step_losses(r.out);
  CHECK(losses.size() == 4);
  CHECK(fs::exists(out + "/adapter/adapter_model.safetensors"));
  // Streamed on the CPU: the same losses (the bitwise weight comparison of streamed and resident
  // quantized bases is tests/model/streaming_test.cpp's, with the resident head sliced alike).
  const ProcessResult s = run_process({kTrain, "--model", nf4, "--data", data, "--out", dir.file("streamed"),
                                       "--device", "cpu", "--steps", "4", "--lora-rank", "4", "--micro-batch", "4",
                                       "--seq-len", "32", "--lr", "1e-2", "--stream", "on", "--json"});
  REQUIRE_MESSAGE(s.exit_code == 0, s.err);
  CHECK(step_losses(s.out) == losses);
  // --full on it is refused in one line, and so is --quantize to another format.
  const ProcessResult full = run_process({kTrain, "--model", nf4, "--data", data, "--out", dir.file("full"),
                                          "--device", "cpu", "--steps", "1", "--full"});
  CHECK(full.exit_code == 2);
  CHECK(full.err.find("trains LoRA adapters") != std::string::npos);
  CHECK(std::count(full.err.begin(), full.err.end(), '\n') == 1);
}

TEST_CASE("onn-train --plan --quantize nf4: the Phi-4 shape under 4 GiB moves at most 0.3x the bf16 plan's bytes") {
  TempDir dir;
  const std::string cfg = dir.file("phi4");
  REQUIRE(run_process({ONN_INIT_PATH, "--preset", "phi4", "--preset-vocab", "--config-only", "--out", cfg}).exit_code == 0);
  const std::vector<std::string> base = {kTrain, "--plan", "--model", cfg, "--lora-rank", "16", "--device", "cuda",
                                         "--host-ram", "64GiB", "--vram-budget", "4GiB", "--batch-rows", "32", "--json"};
  const ProcessResult dense = run_process(base);
  REQUIRE_MESSAGE(dense.exit_code == 0, dense.err);
  std::vector<std::string> argv = base;
  argv.insert(argv.end(), {"--quantize", "nf4"});
  const ProcessResult quant = run_process(argv);
  REQUIRE_MESSAGE(quant.exit_code == 0, quant.err);
  const nlohmann::json d = nlohmann::json::parse(dense.out), q = nlohmann::json::parse(quant.out);
  CHECK(d["base"] == "none");
  CHECK(q["base"] == "nf4");
  CHECK(q["predicted_peak_bytes"].get<uint64_t>() <= uint64_t{4} << 30);
  CHECK(q["weight_bytes_per_step"].get<double>() <= 0.3 * d["weight_bytes_per_step"].get<double>());
  CHECK(q["layers_per_chunk"].get<int64_t>() >= d["layers_per_chunk"].get<int64_t>());
  // Full training on a quantized base is refused in one line.
  argv.push_back("--full");
  const ProcessResult full = run_process(argv);
  CHECK(full.exit_code == 2);
  CHECK(full.err.find("full training needs a dense base") != std::string::npos);
}

TEST_CASE("onn-train --stream on: the init event's plan, stream figures in every step, a validation pass, an adapter") {
  TempDir dir;
  const std::string data = write_data(dir, 24), out = dir.file("run");
  const ProcessResult r = run_process({kTrain, "--model", kModel, "--data", data, "--out", out, "--device", "cpu",
                                       "--steps", "3", "--val-split", "0.25", "--lora-rank", "4", "--micro-batch", "4",
                                       "--seq-len", "32", "--stream", "on", "--train-layers", "1", "--json"});
  REQUIRE(r.exit_code == 0);
  const std::vector<nlohmann::json> ev = events_of(r.out);
  REQUIRE(ev.front()["type"] == "init");
  const nlohmann::json& plan = ev.front()["plan"];
  CHECK(plan["resident"] == false);
  CHECK(plan["layers_per_chunk"] == 1);
  CHECK(plan["chunks"] == 2);
  CHECK(plan["chunk_buffer_bytes"].get<int64_t>() > 0);
  int steps = 0, vals = 0;
  for (const nlohmann::json& e : ev) {
    if (e["type"] == "step") {
      ++steps;
      CHECK(e["stream"]["bytes"].get<int64_t>() > 0);
      CHECK(e["stream"]["transfer_ms"].get<double>() >= 0);
      CHECK(e["stream"]["compute_ms"].get<double>() > 0);
      CHECK(std::isfinite(e["loss"].get<double>()));
    }
    if (e["type"] == "val") ++vals;
  }
  CHECK(steps == 3);
  CHECK(vals == 1);
  CHECK(fs::exists(fs::path(out) / "adapter" / "adapter_model.safetensors"));
  // Streaming is for LoRA; a full run says so and writes nothing.
  const ProcessResult full = run_process({kTrain, "--model", kModel, "--data", data, "--out", dir.file("full"),
                                          "--device", "cpu", "--steps", "1", "--full", "--stream", "on"});
  CHECK(full.exit_code == 2);
  CHECK(full.err.find("--stream on trains LoRA adapters only") != std::string::npos);
  CHECK(!fs::exists(dir.file("full") + "/checkpoints"));
}

TEST_CASE("onn-train --share-loads: micro-batches sharing each weight load train the same bits, copying less") {
  TempDir dir;
  const std::string data = write_data(dir, 24);
  std::map<std::string, nlohmann::json> plan, first_step;
  std::map<std::string, std::string> losses, adapter;
  for (const std::string share : {"on", "off", "single"}) {  // single: one micro-batch per step
    const std::string out = dir.file("run-" + share);
    const ProcessResult r = run_process({kTrain, "--model", kModel, "--data", data, "--out", out, "--device", "cpu",
                                         "--steps", "3", "--lora-rank", "4", "--lora-dropout", "0.1", "--micro-batch",
                                         "2", "--grad-accum", share == "single" ? "1" : "3", "--seq-len", "32",
                                         "--stream", "on", "--share-loads", share == "single" ? "auto" : share,
                                         "--json"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    const std::vector<nlohmann::json> ev = events_of(r.out);
    REQUIRE(ev.front()["type"] == "init");
    plan[share] = ev.front()["plan"];
    for (const nlohmann::json& e : ev)
      if (e["type"] == "step" && first_step[share].is_null()) first_step[share] = e;
    losses[share] = nlohmann::json(step_losses(r.out)).dump();
    adapter[share] = slurp(out + "/adapter/adapter_model.safetensors");
  }
  CHECK(plan["on"]["micro_batches_per_load"] == 3);
  CHECK(plan["off"]["micro_batches_per_load"] == 1);
  CHECK(losses["on"] == losses["off"]);
  CHECK(losses["on"].find("null") == std::string::npos);
  CHECK(!adapter["on"].empty());
  CHECK(adapter["on"] == adapter["off"]);
  // The shared step copies what a step of one micro-batch copies; a load per micro-batch more
  // (not quite three times: a pass may find chunks still in the two buffers).
  const double on = first_step["on"]["stream"]["bytes"], off = first_step["off"]["stream"]["bytes"];
  CHECK(on > 0);
  CHECK(on == first_step["single"]["stream"]["bytes"].get<double>());
  CHECK(off > 1.5 * on);
  CHECK(off <= 3 * on);
  const ProcessResult bad = run_process({kTrain, "--model", kModel, "--data", data, "--out", dir.file("bad"),
                                         "--device", "cpu", "--steps", "1", "--share-loads", "sometimes"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--share-loads") != std::string::npos);
}

TEST_CASE("onn-train --batch-rows: the planner splits the step's rows, and the run keeps its split") {
  TempDir dir;
  const std::string data = write_data(dir, 24), out = dir.file("run");
  const ProcessResult r = run_process({kTrain, "--model", kModel, "--data", data, "--out", out, "--device", "cpu",
                                       "--steps", "2", "--lora-rank", "4", "--seq-len", "32", "--batch-rows", "6",
                                       "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const std::vector<nlohmann::json> ev = events_of(r.out);
  REQUIRE(ev.front()["type"] == "init");
  const nlohmann::json& plan = ev.front()["plan"];
  const int64_t micro = plan["micro_batch"], accum = plan["grad_accum"];
  CHECK(micro * accum == 6);
  CHECK(plan["planner"]["micro_batch"] == micro);
  const nlohmann::json saved = nlohmann::json::parse(slurp(out + "/run_config.json"));
  CHECK(saved["micro_batch"] == micro);
  CHECK(saved["grad_accum"] == accum);
  int steps = 0;
  for (const nlohmann::json& e : ev)
    if (e["type"] == "step") ++steps;
  CHECK(steps == 2);
}

TEST_CASE("onn-train --resume: a run_config.json with an unknown schedule is refused in one line, naming the file") {
  TempDir dir;
  const std::string data = write_data(dir, 8), out = dir.file("run");
  const ProcessResult first = run_process({kTrain, "--model", kModel, "--data", data, "--out", out, "--device", "cpu",
                                           "--steps", "1", "--lora-rank", "2", "--micro-batch", "4", "--seq-len", "32"});
  REQUIRE_MESSAGE(first.exit_code == 0, first.err);
  nlohmann::json cfg = nlohmann::json::parse(slurp(out + "/run_config.json"));
  cfg["schedule"] = "step";
  std::ofstream(out + "/run_config.json") << cfg.dump(2) << "\n";
  const ProcessResult r = run_process({kTrain, "--resume", out, "--device", "cpu"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("run_config.json: the run configuration is damaged") != std::string::npos);
  CHECK(r.err.find("--schedule must be cosine, linear or constant") != std::string::npos);
  CHECK(r.err.find('\n') == r.err.size() - 1);
}

TEST_CASE("onn-train from a Parquet file: bitwise the run from the same records as JSONL") {
  TempDir dir;
  const std::string fixture = std::string(ONN_TEST_DATA_DIR) + "/parquet/pairs_zstd";
  std::string jsonl;
  for (const nlohmann::json& r : read_json_file(fixture + ".rows.json")) jsonl += r.dump() + "\n";
  const std::string data = dir.file("pairs.jsonl");
  write_file_atomic(data, jsonl);
  const auto run = [&](const std::string& file, const std::string& out) {
    return run_process({kTrain, "--model", kModel, "--data", file, "--out", out, "--device", "cpu", "--steps", "4",
                        "--seq-len", "16", "--micro-batch", "2", "--lora-rank", "4", "--lora-dropout", "0.1",
                        "--lr", "5e-3", "--val-split", "0.1", "--log-file", out + ".log"});
  };
  REQUIRE(run(data, dir.file("jsonl")).exit_code == 0);
  const ProcessResult r = run(fixture + ".parquet", dir.file("parquet"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const auto want = step_losses(slurp(dir.file("jsonl") + ".log"));
  CHECK(want.size() == 4);
  CHECK(step_losses(slurp(dir.file("parquet") + ".log")) == want);
  CHECK(slurp(dir.file("parquet") + "/adapter/adapter_model.safetensors") ==
        slurp(dir.file("jsonl") + "/adapter/adapter_model.safetensors"));
  // A cut file: one line naming it, exit 2, nothing trained.
  std::string bytes = slurp(fixture + ".parquet");
  bytes.resize(bytes.size() / 2);
  const std::string cut = dir.file("cut.parquet");
  write_file_atomic(cut, bytes);
  const ProcessResult bad = run(cut, dir.file("cut"));
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("onn-train: error: " + cut + ": not a Parquet file") != std::string::npos);
  CHECK(!fs::exists(dir.file("cut") + "/run_config.json"));
}

#if !defined(__SANITIZE_ADDRESS__)  // ASan's shadow memory and quarantine are resident too
TEST_CASE("onn-train's memory does not grow with its data file: JSONL and Parquet stream into a mapped corpus") {
  TempDir dir;
  const std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog",
                                          "while", "seven", "wizards", "hex", "jolly", "boxing", "frogs"};
  const auto text_of = [&](int64_t r) {
    std::mt19937 g(static_cast<uint32_t>(r));
    std::string t;
    for (int w = 0; w < 400; ++w) t += (w ? " " : "") + words[g() % words.size()];
    return t;
  };
  constexpr int64_t kRows = 24000, kSmallRows = 100;  // about 48 MiB of text, and a little
  const auto write_jsonl = [&](const std::string& path, int64_t rows) {
    std::ofstream out(path, std::ios::binary);
    for (int64_t r = 0; r < rows; ++r) out << nlohmann::json{{"text", text_of(r)}}.dump() << "\n";
  };
  write_jsonl(dir.file("small.jsonl"), kSmallRows);
  write_jsonl(dir.file("big.jsonl"), kRows);
  write_string_parquet(dir.file("big.parquet"), {"text"}, kRows, 1000,
                       [&](int64_t r, std::vector<std::string>& v) { v[0] = text_of(r); });
  const auto run = [&](const std::string& data, const std::string& out) {
    const ProcessResult r = run_process({kTrain, "--model", kModel, "--data", data, "--out", out, "--device", "cpu",
                                         "--steps", "1", "--seq-len", "128", "--val-split", "0"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return r.max_rss_kb;
  };
  const int64_t small = run(dir.file("small.jsonl"), dir.file("small"));
  const int64_t jsonl = run(dir.file("big.jsonl"), dir.file("jsonl"));
  const int64_t parquet = run(dir.file("big.parquet"), dir.file("parquet"));
  const auto text_kb = static_cast<int64_t>(fs::file_size(dir.file("big.jsonl")) / 1024);
  MESSAGE("peak resident KiB: " << small << " for " << kSmallRows << " rows; " << jsonl << " (JSONL) and "
                                << parquet << " (Parquet) for " << kRows << " rows, " << text_kb << " KiB of JSONL");
  CHECK(text_kb > 45 * 1024);
  // Before streaming, the text and the tokens (five bytes a token, about one token per 1.3
  // bytes here) were held whole, twice over: growth of several times the file.
  CHECK(jsonl - small < text_kb / 4);
  CHECK(parquet - small < text_kb / 4);
  // The two files tokenized to the same corpus.
  const SafetensorsFile a = SafetensorsFile::open(dir.file("jsonl/data/train-corpus.safetensors"));
  const SafetensorsFile b = SafetensorsFile::open(dir.file("parquet/data/train-corpus.safetensors"));
  CHECK(a.file_bytes() == b.file_bytes());
  CHECK(a.metadata() == b.metadata());
  CHECK(std::stoll(a.metadata().at("targets")) > 20'000'000);
}
#endif

TEST_CASE("onn-train --cpu-matmul bf16, LoRA and --full: the same bits at 1 and 3 threads, near the f32 run, kept in "
          "run_config") {
  TempDir dir;
  const std::string model = dir.file("tiny");
  REQUIRE(run_process({ONN_INIT_PATH, "--preset", "tiny", "--out", model, "--tokenizer-text",
                       std::string(ONN_TEST_DATA_DIR) + "/eval.txt", "--tokenizer-vocab", "300", "--seed", "1"})
              .exit_code == 0);
  // Rows of 256 tokens: the MLP's products (256 x 160 x 64) take the bf16 path.
  const std::string data = dir.file("long.jsonl");
  {
    std::ofstream f(data);
    const std::string text = slurp(std::string(ONN_TEST_DATA_DIR) + "/eval.txt");
    for (int i = 0; i < 8; ++i) {
      std::string t;
      for (int r = 0; r < 6; ++r) t += std::to_string(i * 6 + r) + " " + text;
      f << nlohmann::json{{"text", t}}.dump() << "\n";
    }
  }
  // LoRA with the frozen base stored in bf16, or --full (bf16 copies of the trained weights).
  const auto run = [&](const std::string& out, const char* matmul, const char* threads, bool full) {
    std::vector<std::string> args = {kTrain, "--model", model, "--data", data, "--out", out, "--device", "cpu",
                                     "--steps", "3", "--seq-len", "256", "--micro-batch", "1", "--cpu-matmul", matmul,
                                     "--threads", threads, "--val-split", "0", "--log-file", out + ".log"};
    for (const char* a : full ? std::vector<const char*>{"--full"} : std::vector<const char*>{"--quantize", "bf16"})
      args.emplace_back(a);
    return run_process(args);
  };
  const std::string missing = cpu_bf16_matmul_missing();
  if (!missing.empty()) {
    MESSAGE("skipped: " << missing);
    const ProcessResult r = run(dir.file("refused"), "bf16", "1", false);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("onn-train: error: --cpu-matmul bf16: " + missing) != std::string::npos);
    return;
  }
  for (const bool full : {false, true}) {
    CAPTURE(full);
    const std::string mode = full ? "full-" : "lora-",
                      weights = full ? "/model/model.safetensors" : "/adapter/adapter_model.safetensors";
    for (const auto& [run_name, matmul, threads] :
         {std::tuple{"f32", "f32", "2"}, {"bf16-1", "bf16", "1"}, {"bf16-3", "bf16", "3"}}) {
      const ProcessResult r = run(dir.file(mode + run_name), matmul, threads, full);
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    }
    const auto f32 = step_losses(slurp(dir.file(mode + "f32.log")));
    const auto one = step_losses(slurp(dir.file(mode + "bf16-1.log")));
    REQUIRE(one.size() == 3);
    CHECK(step_losses(slurp(dir.file(mode + "bf16-3.log"))) == one);
    CHECK(slurp(dir.file(mode + "bf16-3" + weights)) == slurp(dir.file(mode + "bf16-1" + weights)));
    bool differs = false;
    for (const auto& [step, loss] : one) {
      const double a = std::stod(loss), b = std::stod(f32.at(step));
      CHECK(std::abs(a - b) < 1e-2 * std::abs(b));
      differs |= loss != f32.at(step);
    }
    CHECK(differs);  // the bf16 path ran
    CHECK(read_json_file(dir.file(mode + "bf16-1/run_config.json"), 1 << 20)["cpu_matmul"] == "bf16");
  }
}

TEST_CASE("onn-train with ONN_WORLD_SIZE > 1 and no MPI launcher is refused in one line, exit 2") {
  TempDir dir;
  const std::string data = write_data(dir, 8), out = dir.file("run");
  ::setenv("ONN_WORLD_SIZE", "2", 1);
  const ProcessResult r = run_process({kTrain, "--model", kModel, "--data", data, "--out", out, "--device", "cpu"});
  ::unsetenv("ONN_WORLD_SIZE");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("onn-train: error: ONN_WORLD_SIZE=2 but no MPI launcher started this process") != std::string::npos);
  CHECK(!fs::exists(out + "/run_config.json"));
}
