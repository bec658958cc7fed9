// onn-bench train as a user runs it on the CPU: the report's fields are consistent with each
// other (tokens per step, MFU from the FLOP count and the measured GEMM rate); bad flags exit 2.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <set>

#include "runtime/json.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("onn-bench train: a consistent report for LoRA and full training of the tiny preset") {
  for (const bool full : {false, true}) {
    CAPTURE(full);
    std::vector<std::string> argv = {ONN_BENCH_PATH, "train", "--preset", "tiny", "--device", "cpu", "--steps", "3",
                                     "--warmup", "1", "--seq-len", "64", "--micro-batch", "2", "--json"};
    if (full) argv.push_back("--full");
    const ProcessResult r = run_process(argv);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    const nlohmann::json j = parse_json_strict(r.out, "onn-bench output");
    CHECK(j["mode"] == (full ? "full" : "lora"));
    CHECK(j["steps_timed"] == 3);
    CHECK(j["seq_len"] == 64);
    const double tps = j["tokens_per_s"], ms = j["ms_per_step"];
    REQUIRE(tps > 0);
    // Every step is two full rows. (tokens_per_s and ms_per_step are medians over steps whose
    // times vary on a loaded machine, so their product is not checked.)
    CHECK(j["tokens_per_step"].get<double>() == 2 * 64);
    CHECK(ms > 0);
    CHECK(j["mfu_vs_measured_gemm"].get<double>() ==
          doctest::Approx(tps * j["model_flops_per_token"].get<double>() / (j["measured_gemm_tflops"].get<double>() * 1e12)));
    CHECK(j["mfu"].is_null());  // no datasheet peak for a CPU
    CHECK((j["parameters_trained"] == j["parameters_total"]) == full);
    CHECK(j["peak_rss_bytes"].get<int64_t>() > 0);
  }
  const ProcessResult bad = run_process({ONN_BENCH_PATH, "train", "--preset", "tiny", "--model", "x", "--device", "cpu"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("excludes") != std::string::npos);
  const ProcessResult none = run_process({ONN_BENCH_PATH});
  CHECK(none.exit_code == 2);
}

TEST_CASE("onn-bench train --trace: a streamed run's timeline as a Chrome trace, and where its time went") {
  TempDir tmp;
  const std::string trace = (tmp.path() / "trace.json").string();
  const ProcessResult r = run_process({ONN_BENCH_PATH, "train", "--preset", "tiny", "--device", "cpu", "--stream", "on",
                                       "--steps", "2", "--warmup", "1", "--seq-len", "32", "--micro-batch", "2",
                                       "--trace", trace, "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const nlohmann::json j = parse_json_strict(r.out, "onn-bench output");
  const nlohmann::json& t = j["stream"]["trace"];
  CHECK(t["compute_ms"].get<double>() > 0);
  CHECK(t["span_ms"].get<double>() >= t["compute_ms"].get<double>());
  CHECK(t["idle_host_ms"].get<double>() + t["idle_copy_ms"].get<double>() + t["idle_other_ms"].get<double>() ==
        doctest::Approx(t["idle_ms"].get<double>()).epsilon(1e-6));
  CHECK(t["idle_host_calls_ms"].is_object());  // what the host was held up in (none recorded on the CPU)
  const nlohmann::json chrome = read_json_file(trace);
  std::map<std::string, int> lanes;  // thread id -> complete events
  std::set<int64_t> steps;
  for (const auto& e : chrome["traceEvents"]) {
    if (e["ph"] != "X") continue;
    ++lanes[e["name"].get<std::string>().substr(0, e["name"].get<std::string>().find(' '))];
    CHECK(e["dur"].get<double>() >= 0);
    CHECK(e["args"]["start_ms"].get<double>() >= 0);  // on the step's own axis (scripts/trace_gaps.py)
    CHECK(e["args"].contains("lane"));
    steps.insert(e["args"]["step"].get<int64_t>());
  }
  CHECK(lanes["compute"] > 0);
  CHECK(lanes["copy"] > 0);
  CHECK(steps == std::set<int64_t>{0, 1});  // the two timed steps, not the warm-up
  // A resident run has no timeline: refused up front, nothing written.
  const std::string none = (tmp.path() / "none.json").string();
  const ProcessResult off = run_process({ONN_BENCH_PATH, "train", "--preset", "tiny", "--device", "cpu", "--stream",
                                         "off", "--trace", none});
  CHECK(off.exit_code != 0);
  CHECK(off.err.find("--trace") != std::string::npos);
  CHECK(!std::filesystem::exists(none));
}
