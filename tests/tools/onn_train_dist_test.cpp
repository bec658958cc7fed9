// Data-parallel onn-train on CPU ranks, launched as users launch it (mpirun -np N): against one
// process with the same global batch (LoRA with dropout, full training from a preset), kill -9
// of the whole job and --resume, ranks placed differently, ranks started with different flags
// or data, a rank that fails alone or is killed, and a rank that stops answering (the time-out).
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "runtime/dtype.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;
namespace fs = std::filesystem;

namespace {

const std::string kTrain = ONN_TRAIN_PATH;
const std::string kMpirun = ONN_MPIEXEC;
const std::string kStall = ONN_MPI_STALL_PATH;
const std::string kModel = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa";
// What a data-parallel run may differ from one process by: the gradient sum's grouping
// ((g1 + g2) + (g3 + g4) instead of ((g1 + g2) + g3) + g4) rounds differently in the last bits,
// and AdamW's normalised steps carry that into the weights.
constexpr double kParallelTolerance = 1e-6;

// mpirun as root in a container (CI) and with more ranks than cores.
void allow_mpirun() {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  ::setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
#if defined(__SANITIZE_ADDRESS__)
  ::setenv("ASAN_OPTIONS", "detect_leaks=0", 1);  // OpenMPI's own allocations outlive MPI_Finalize
#endif
}

std::vector<std::string> mpirun(int np, const std::vector<std::string>& args) {
  std::vector<std::string> a = {kMpirun, "-np", std::to_string(np)};
  a.insert(a.end(), args.begin(), args.end());
  return a;
}

std::string write_data(const std::string& path, int n, int salt = 0) {
  std::ofstream f(path);
  for (int i = 0; i < n; ++i)
    f << nlohmann::json{{"input", "Q" + std::to_string(i) + " is"}, {"output", " A" + std::to_string((i * 7 + salt) % 13)}}.dump()
      << "\n";
  return path;
}

std::string slurp(const std::string& p) { return read_file(p, size_t{1} << 30); }

std::vector<nlohmann::json> events_of(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    nlohmann::json e = nlohmann::json::parse(l, nullptr, false);
    if (!e.is_discarded() && !l.empty()) out.push_back(std::move(e));
  }
  return out;
}

// step -> loss (the last report of each step: a resumed run repeats some).
std::map<int64_t, double> step_losses(const std::string& log) {
  std::map<int64_t, double> m;
  for (const nlohmann::json& e : events_of(slurp(log)))
    if (e["type"] == "step") m[e["step"].get<int64_t>()] = e["loss"].get<double>();
  return m;
}

// ||b - a|| / ||a|| over every element of two weight files with the same tensors (the whole
// file; `worst_tensor` gets the largest of the same measure per tensor).
double weights_error(const std::string& a_path, const std::string& b_path, double& worst_tensor) {
  const SafetensorsFile a = SafetensorsFile::open(a_path), b = SafetensorsFile::open(b_path);
  REQUIRE(a.tensors().size() == b.tensors().size());
  double diff = 0, norm = 0;
  worst_tensor = 0;
  for (const TensorInfo& t : a.tensors()) {
    const Tensor x = b.tensor(t.name), ref = a.tensor(t.name);
    REQUIRE(x.numel() == ref.numel());
    double d = 0, n = 0;
    for (size_t i = 0; i < static_cast<size_t>(ref.numel()); ++i) {
      const double r = load_as_double(ref.data(), ref.dtype(), i), v = load_as_double(x.data(), x.dtype(), i);
      d += (v - r) * (v - r);
      n += r * r;
    }
    if (n > 0) worst_tensor = std::max(worst_tensor, std::sqrt(d / n));
    diff += d;
    norm += n;
  }
  return std::sqrt(diff / norm);
}

struct Mode {
  std::string name, weights;
  std::vector<std::string> args;
};

const std::vector<Mode>& modes() {
  static const std::vector<Mode> m = {
      {"lora", "adapter/adapter_model.safetensors",
       {"--model", kModel, "--lora-rank", "4", "--lora-dropout", "0.1", "--micro-batch", "2"}},
      {"full", "model/model.safetensors",
       {"--init", "tiny", "--init-tokenizer-vocab", "300", "--micro-batch", "2", "--weight-decay", "0.1"}},
  };
  return m;
}

std::vector<std::string> train_args(const Mode& m, const std::string& data, const std::string& out, int grad_accum) {
  std::vector<std::string> a = {kTrain, "--data", data, "--out", out, "--device", "cpu", "--steps", "6",
                                "--seq-len", "32", "--lr", "5e-3", "--warmup-steps", "2", "--val-split", "0.1",
                                "--eval-every", "3", "--log-file", out + ".log", "--grad-accum",
                                std::to_string(grad_accum)};
  a.insert(a.end(), m.args.begin(), m.args.end());
  return a;
}

}  // namespace

TEST_CASE("mpirun -np 2 and 3: LoRA and full training match one process with the same global batch") {
  allow_mpirun();
  TempDir dir;
  const std::string data = write_data(dir.file("data.jsonl"), 48);
  for (const Mode& m : modes()) {
    CAPTURE(m.name);
    const std::string one = dir.file(m.name + "-1");
    REQUIRE(run_process(train_args(m, data, one, 6)).exit_code == 0);
    const auto want = step_losses(one + ".log");
    REQUIRE(want.size() == 6);
    for (const nlohmann::json& e : events_of(slurp(one + ".log")))
      if (e["type"] == "step") CHECK(e["comm"].is_null());  // one process sums nothing
    for (int np : {2, 3}) {
      CAPTURE(np);
      const std::string out = dir.file(m.name + "-" + std::to_string(np));
      const ProcessResult r = run_process(mpirun(np, train_args(m, data, out, 6 / np)));
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
      const std::vector<nlohmann::json> ev = events_of(slurp(out + ".log"));
      // Rank 0 alone reports: one init event, which names the world.
      REQUIRE(ev.front()["type"] == "init");
      CHECK(ev.front()["plan"]["world"]["size"] == np);
      CHECK(ev.front()["plan"]["world"]["backend"] == "mpi");
      CHECK(ev.front()["plan"]["world"]["micro_batches_per_rank"] == 6 / np);
      CHECK(std::count_if(ev.begin(), ev.end(), [](const nlohmann::json& e) { return e["type"] == "init"; }) == 1);
      // Every layer's gradient sum started in the last pass's backward, as it left the layer.
      const int64_t layers = read_json_file(m.name == "lora" ? kModel + "/config.json" : out + "/model/config.json")
                                 .at("num_hidden_layers").get<int64_t>();
      for (const nlohmann::json& e : ev)
        if (e["type"] == "step") {
          CHECK(e["comm"]["backend"] == "mpi");
          CHECK(e["comm"]["sums_in_backward"] == layers);
          CHECK(e["comm"]["wait_ms"].get<double>() >= 0);
        }
      const auto got = step_losses(out + ".log");
      REQUIRE(got.size() == want.size());
      CHECK(got.at(1) == want.at(1));  // the same weights and tokens: the first loss is bitwise
      for (const auto& [step, loss] : want) CHECK(std::fabs(got.at(step) - loss) <= kParallelTolerance * loss);
      double worst = 0;
      const double err = weights_error(one + "/" + m.weights, out + "/" + m.weights, worst);
      MESSAGE(m.name << " np " << np << ": weights within " << err << " (normalized over the file; worst tensor "
                     << worst << ") of one process");
      CHECK(err < kParallelTolerance);
      CHECK(fs::exists(out + "/checkpoints/latest"));
    }
  }
  // The rank-ordered sum does not depend on timing: the same job twice gives the same bits.
  const Mode& lora = modes()[0];
  const std::string again = dir.file("lora-2-again");
  REQUIRE(run_process(mpirun(2, train_args(lora, data, again, 3))).exit_code == 0);
  CHECK(slurp(again + "/" + lora.weights) == slurp(dir.file("lora-2") + "/" + lora.weights));
}

TEST_CASE("mpirun -np 1 sums over one rank, bitwise the plain run, and --plan names the world and the per-rank batch") {
  allow_mpirun();
  TempDir dir;
  const std::string data = write_data(dir.file("data.jsonl"), 24);
  const Mode& lora = modes()[0];
  const std::string plain = dir.file("plain"), one = dir.file("one");
  REQUIRE(run_process(train_args(lora, data, plain, 2)).exit_code == 0);
  const ProcessResult r = run_process(mpirun(1, train_args(lora, data, one, 2)));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(events_of(slurp(one + ".log")).front()["plan"]["world"]["backend"] == "mpi");
  CHECK(step_losses(one + ".log") == step_losses(plain + ".log"));
  CHECK(slurp(one + "/" + lora.weights) == slurp(plain + "/" + lora.weights));
  const ProcessResult plan = run_process(mpirun(3, {kTrain, "--plan", "--init", "tiny", "--device", "cpu",
                                                    "--micro-batch", "4", "--grad-accum", "2"}));
  REQUIRE_MESSAGE(plan.exit_code == 0, plan.err);
  CHECK(plan.out.find("world: 3 ranks (mpi), each 2 micro-batches of 4 rows per step: 24 rows per optimizer step") !=
        std::string::npos);
  CHECK(plan.out.find("onn-train --plan") == plan.out.rfind("onn-train --plan"));  // rank 0 alone prints
}

// A streamed pass has the bits of a resident one with the sliced LM head and recompute, not of
// the default resident pass: the mixed run is compared within the data-parallel tolerance.
TEST_CASE("each rank places its own weights: rank 0 streamed, rank 1 resident, against one resident process") {
  allow_mpirun();
  TempDir dir;
  const std::string data = write_data(dir.file("data.jsonl"), 24);
  const Mode& lora = modes()[0];
  const std::string one = dir.file("one"), mixed = dir.file("mixed");
  REQUIRE(run_process(train_args(lora, data, one, 4)).exit_code == 0);
  std::vector<std::string> argv = {kMpirun, "-np", "1"};
  for (const std::string& s : train_args(lora, data, mixed, 2)) argv.push_back(s);
  for (const char* s : {"--stream", "on", "--layers-per-chunk", "1", ":", "-np", "1"}) argv.push_back(s);
  for (const std::string& s : train_args(lora, data, mixed, 2)) argv.push_back(s);
  const ProcessResult r = run_process(argv);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const nlohmann::json init = events_of(slurp(mixed + ".log")).front();
  CHECK(init["plan"]["resident"] == false);  // rank 0's plan
  CHECK(init["plan"]["layers_per_chunk"] == 1);
  const auto want = step_losses(one + ".log"), got = step_losses(mixed + ".log");
  REQUIRE(got.size() == want.size());
  for (const auto& [step, loss] : want) CHECK(std::fabs(got.at(step) - loss) <= kParallelTolerance * loss);
  double worst = 0;
  CHECK(weights_error(one + "/" + lora.weights, mixed + "/" + lora.weights, worst) < kParallelTolerance);
}

TEST_CASE("mpirun -np 2, kill -9 of the whole job at random moments, then --resume: bitwise the uninterrupted run") {
  allow_mpirun();
  TempDir dir;
  const std::string data = write_data(dir.file("data.jsonl"), 40);
  std::mt19937 rng(23);
  for (const Mode& m : modes()) {
    CAPTURE(m.name);
    auto args = [&](const std::string& out) {
      std::vector<std::string> a = train_args(m, data, out, 2);
      for (const char* f : {"--save-every", "1", "--keep-last", "2"}) a.push_back(f);
      return mpirun(2, a);
    };
    const std::string ref = dir.file(m.name + "-ref");
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(run_process(args(ref)).exit_code == 0);
    const int max_delay = static_cast<int>(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    const std::string run = dir.file(m.name + "-killed");
    KilledRun k;
    k.start = args;
    k.resume = [](const std::string& out) {
      return mpirun(2, {kTrain, "--resume", out, "--device", "cpu", "--log-file", out + ".log"});
    };
    k.killed_after = run_job_killed_after;
    k.attempts = 10;
    k.kill_attempts = 6;
    k.max_kills = 2;
    const KilledRunResult killed = run_killed_and_resumed(k, run, max_delay, rng);
    REQUIRE(killed.finished);
    CHECK(killed.kills >= 1);
    CHECK(step_losses(run + ".log") == step_losses(ref + ".log"));
    CHECK(slurp(run + "/" + m.weights) == slurp(ref + "/" + m.weights));
  }
}

TEST_CASE("ranks started with a different --lr, --data or data are refused by every rank in one line, exit 2") {
  allow_mpirun();
  TempDir dir;
  fs::create_directories(dir.path() / "a");
  fs::create_directories(dir.path() / "b");
  const std::string data = write_data(dir.file("a/data.jsonl"), 20);
  write_data(dir.file("b/data.jsonl"), 20, 5);  // the same name, other answers
  const std::string out = dir.file("run");
  const std::vector<std::string> base = {kTrain, "--model", kModel, "--out", out, "--device", "cpu", "--steps", "2",
                                         "--seq-len", "32", "--lora-rank", "4"};
  const auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  struct Case {
    std::string name;
    std::vector<std::string> rank0, rank1;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"lr", with({"--data", data}), with({"--data", data, "--lr", "1e-3"}),
       "rank 1's configuration differs from rank 0's: lr is 0.001 on rank 1 and 0.0002 on rank 0"},
      {"data file", with({"--data", data}), with({"--data", dir.file("b/data.jsonl")}),
       "rank 1's configuration differs from rank 0's: data is"},
      // The same path, read in another folder: the tokens differ.
      {"data content", with({"--data", "data.jsonl"}), with({"--data", "data.jsonl"}),
       "rank 1's data differs from rank 0's: training tokens (FNV-1a) is"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    std::vector<std::string> argv = {kMpirun, "-np", "1", "-wdir", dir.file("a")};
    argv.insert(argv.end(), c.rank0.begin(), c.rank0.end());
    for (const std::string& s : {std::string(":"), std::string("-np"), std::string("1"), std::string("-wdir"), dir.file("b")})
      argv.push_back(s);
    argv.insert(argv.end(), c.rank1.begin(), c.rank1.end());
    const ProcessResult r = run_process(argv);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(c.want) != std::string::npos);
    // One line: rank 0 prints it for both.
    size_t lines = 0;
    for (size_t at = r.err.find("onn-train: "); at != std::string::npos; at = r.err.find("onn-train: ", at + 1)) ++lines;
    CHECK(lines == 1);
    CHECK(!fs::exists(out + "/run_config.json"));
    CHECK(!fs::exists(out + "/checkpoints"));
  }
}

TEST_CASE("a rank that fails alone or is killed ends every rank, and one that stops answering ends them at --comm-timeout") {
  allow_mpirun();
  TempDir dir;
  const std::string data = write_data(dir.file("data.jsonl"), 20);
  const std::vector<std::string> run = {kTrain, "--model", kModel, "--data", data, "--out", dir.file("run"),
                                        "--device", "cpu", "--steps", "2", "--seq-len", "32", "--lora-rank", "4",
                                        "--comm-timeout", "3"};
  // Rank 1's model folder does not exist: it fails before the ranks compare configurations,
  // while rank 0 waits for it.
  std::vector<std::string> argv = {kMpirun, "-np", "1"};
  argv.insert(argv.end(), run.begin(), run.end());
  for (const std::string& s : {std::string(":"), std::string("-np"), std::string("1"), kTrain, std::string("--model"),
                               std::string("/nonexistent-model"), std::string("--data"), data, std::string("--out"),
                               dir.file("run"), std::string("--device"), std::string("cpu")})
    argv.push_back(s);
  auto t0 = std::chrono::steady_clock::now();
  ProcessResult r = run_process(argv);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("onn-train: rank 1: error: /nonexistent-model") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60));
  // A rank killed in the middle of training: the launcher ends the job, no rank is left waiting.
  argv = mpirun(2, {kTrain, "--model", kModel, "--data", data, "--out", dir.file("long"), "--device", "cpu",
                    "--steps", "100000", "--seq-len", "32", "--lora-rank", "4"});
  t0 = std::chrono::steady_clock::now();
  r = run_job_member_killed_after(argv, 3000);
  CHECK(r.exit_code != 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60));
  CHECK(!fs::exists(dir.file("long") + "/adapter"));  // it did not run to the end
  // Rank 1 joins MPI and then sleeps: rank 0's first collective times out.
  argv = {kMpirun, "-np", "1"};
  argv.insert(argv.end(), run.begin(), run.end());
  for (const std::string& s : {std::string(":"), std::string("-np"), std::string("1"), kStall, std::string("120")}) argv.push_back(s);
  t0 = std::chrono::steady_clock::now();
  r = run_process(argv);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("onn: rank 0: the all-gather did not complete within 3 s (--comm-timeout)") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60));
}
