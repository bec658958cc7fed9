// onn-bench train as a user runs it on the CPU: the report's fields are consistent with each
// other (tokens per step, MFU from the FLOP count and the measured GEMM rate); bad flags exit 2.
#include <doctest/doctest.h>

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
