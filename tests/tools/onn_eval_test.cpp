// onn-eval against transformers: for each random HF model folder (Llama GQA, Llama tied,
// Qwen2, Phi-3; tests/data/make_model_fixtures.py) the loss over eval.txt and eval.jsonl in
// 16-token windows matches the reference to 1e-4 relative, with the same token count, on the
// CPU; small --batch-tokens packs give the same result; errors exit 2 with one line.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <string>

#include "runtime/json.h"
#include "support/parquet_writer.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {
const std::string kTool = ONN_EVAL_PATH;
const std::string kData = ONN_TEST_DATA_DIR;
}  // namespace

TEST_CASE("onn-eval reproduces transformers' loss on each random model folder") {
  for (const char* name : {"llama_gqa", "llama_tied", "qwen2", "phi3"}) {
    const std::string dir = kData + "/models/" + name;
    const nlohmann::json ref = read_json_file(dir + "/reference_eval.json");
    for (const char* file : {"eval.txt", "eval.jsonl"}) {
      for (const char* batch : {"8192", "20"}) {
        CAPTURE(name);
        CAPTURE(file);
        CAPTURE(batch);
        const ProcessResult r = run_process({kTool, "--model", dir, "--data", kData + "/" + file, "--seq-len", "16",
                                             "--json", "--device", "cpu", "--batch-tokens", batch});
        REQUIRE(r.exit_code == 0);
        const nlohmann::json got = parse_json_strict(r.out, "onn-eval output");
        const double want = ref[file]["loss"].get<double>();
        CHECK(std::abs(got["loss"].get<double>() - want) / want < 1e-4);
        CHECK(got["tokens"].get<int64_t>() == ref[file]["tokens"].get<int64_t>());
        CHECK(got["perplexity"].get<double>() == doctest::Approx(std::exp(got["loss"].get<double>())));
      }
    }
  }
}

TEST_CASE("onn-eval: bad usage and bad input give one line on stderr and exit 2") {
  TempDir dir;
  std::ofstream(dir.file("bad.jsonl")) << "{\"text\": \"fine\"}\n{\"output\": \"x\"}\n";
  std::ofstream(dir.file("empty.txt")) << "";
  std::ofstream(dir.file("data.xml")) << "<text>a b c</text>\n";
  const std::string model = kData + "/models/qwen2";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{kTool, "--data", kData + "/eval.txt"}, "--model is required"},
      {{kTool, "--model", model, "--data", dir.file("missing.txt"), "--device", "cpu"}, "missing.txt: no such file"},
      {{kTool, "--model", model, "--data", dir.file("bad.jsonl"), "--device", "cpu"}, "bad.jsonl:2: field \"text\" missing"},
      {{kTool, "--model", model, "--data", dir.file("empty.txt"), "--device", "cpu"}, "empty.txt: the file is empty"},
      {{kTool, "--model", model, "--data", kData + "/parquet/pairs_zstd.parquet", "--device", "cpu"},
       "pairs_zstd.parquet:row 1: onn-eval reads {\"text\"} records"},
      {{kTool, "--model", model, "--data", dir.file("data.xml"), "--device", "cpu"}, "unsupported data file type"},
      {{kTool, "--model", model, "--data", kData + "/eval.txt", "--seq-len", "1"}, "--seq-len"},
      {{kTool, "--model", model, "--data", kData + "/eval.txt", "--device", "tpu"}, "tpu"},
  };
  for (const auto& [argv, message] : cases) {
    CAPTURE(message);
    const ProcessResult r = run_process(argv);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);
  }
}

TEST_CASE("onn-eval reads the same texts from JSONL, Parquet, CSV and TSV to the same loss") {
  TempDir dir;
  std::vector<std::string> texts;
  for (int i = 0; i < 12; ++i)
    texts.push_back("Document " + std::to_string(i) + ": the quick brown fox, \"quoted\", jumps over dog " +
                    std::to_string(i * 7));
  {
    std::ofstream jsonl(dir.file("t.jsonl")), csv(dir.file("t.csv")), tsv(dir.file("t.tsv"));
    csv << "id,text\n";
    tsv << "text\n";
    for (size_t i = 0; i < texts.size(); ++i) {
      jsonl << nlohmann::json{{"text", texts[i]}}.dump() << "\n";
      std::string quoted;
      for (char c : texts[i]) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
      csv << i << ",\"" << quoted << "\"\n";
      tsv << "\"" << quoted << "\"\n";
    }
  }
  write_string_parquet(dir.file("t.parquet"), {"text"}, static_cast<int64_t>(texts.size()), 5,
                       [&](int64_t r, std::vector<std::string>& v) { v[0] = texts[static_cast<size_t>(r)]; });
  const auto eval = [&](const std::string& file) {
    const ProcessResult r = run_process({kTool, "--model", kData + "/models/llama_gqa", "--data", file, "--device",
                                         "cpu", "--seq-len", "16", "--json"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return parse_json_strict(r.out, "onn-eval output");
  };
  const nlohmann::json want = eval(dir.file("t.jsonl"));
  CHECK(want["tokens"].get<int64_t>() > 100);
  for (const char* f : {"t.parquet", "t.csv", "t.tsv"}) {
    CAPTURE(f);
    CHECK(eval(dir.file(f)) == want);
  }
}

TEST_CASE("onn-eval --threads 1, 2 and 3 print the same loss, and --threads 0 is refused") {
  std::string first;
  for (const char* n : {"1", "2", "3"}) {
    CAPTURE(n);
    const ProcessResult r = run_process({kTool, "--model", kData + "/models/phi3", "--data", kData + "/eval.txt",
                                         "--seq-len", "16", "--device", "cpu", "--json", "--threads", n});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    if (first.empty()) first = r.out;
    CHECK(r.out == first);
  }
  const ProcessResult bad = run_process({kTool, "--model", kData + "/models/phi3", "--data", kData + "/eval.txt",
                                         "--threads", "0"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--threads") != std::string::npos);
}
