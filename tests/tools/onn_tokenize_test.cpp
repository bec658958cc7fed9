// onn-tokenize as a user runs it: ids for --text, --file and --jsonl (checked against the
// tokenizers package's ids), --no-special, --decode, --version, and one-line errors with
// exit 2.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "runtime/json.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {
const std::string kTool = ONN_TOKENIZE_PATH;
const std::string kTok = std::string(ONN_TEST_DATA_DIR) + "/tokenizers/";

std::string ids_line(const nlohmann::json& ids) { return ids.dump() + "\n"; }
}  // namespace

TEST_CASE("onn-tokenize prints the reference ids for --text, --file and --jsonl") {
  const nlohmann::json expected = read_json_file(kTok + "qwen3/expected.json");
  const auto& c = expected["cases"][1];  // code with newlines and indentation
  const std::string text = c["text"].get<std::string>();
  TempDir dir;
  std::ofstream(dir.file("in.txt"), std::ios::binary) << text;
  const ProcessResult a = run_process({kTool, "--model", kTok + "qwen3", "--text", text});
  CHECK(a.exit_code == 0);
  CHECK(a.out == ids_line(c["ids"]));
  const ProcessResult b = run_process({kTool, "--tokenizer", kTok + "qwen3/tokenizer.json", "--file", dir.file("in.txt")});
  CHECK(b.out == ids_line(c["ids"]));
  const nlohmann::json sp = read_json_file(kTok + "sp32k/expected.json");
  std::ofstream(dir.file("sp.jsonl"), std::ios::binary)
      << nlohmann::json{{"text", sp["cases"][3]["text"]}}.dump() << "\n\n"
      << nlohmann::json{{"text", sp["cases"][0]["text"]}}.dump() << "\n";
  const ProcessResult d = run_process({kTool, "--model", kTok + "sp32k", "--jsonl", dir.file("sp.jsonl"), "--no-special"});
  CHECK(d.exit_code == 0);
  CHECK(d.out == ids_line(sp["cases"][3]["ids_no_special"]) + ids_line(sp["cases"][0]["ids_no_special"]));
  const ProcessResult e = run_process({kTool, "--model", kTok + "sp32k", "--decode", "--text", sp["cases"][0]["ids"].dump()});
  CHECK(e.out == sp["cases"][0]["decoded"].get<std::string>() + "\n");
  const ProcessResult v = run_process({kTool, "--version"});
  CHECK(v.exit_code == 0);
  CHECK(v.out.rfind("onn-tokenize ", 0) == 0);
}

TEST_CASE("onn-tokenize: bad usage and bad input give one line on stderr and exit 2") {
  TempDir dir;
  std::ofstream(dir.file("bad.jsonl")) << "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{kTool, "--text", "x"}, "Exactly 1 option from [--model,--tokenizer]"},
      {{kTool, "--model", kTok + "sp32k"}, "Exactly 1 option from [--text,--file,--jsonl]"},
      {{kTool, "--model", kTok + "sp32k", "--jsonl", dir.file("bad.jsonl")}, "bad.jsonl:2: field \"text\" missing"},
      {{kTool, "--model", kTok + "sp32k", "--decode", "--text", "[1, 32000]"}, "token id 32000 is outside the vocabulary"},
      {{kTool, "--model", kTok + "sp32k", "--decode", "--text", "[1, 2"}, "--text"},
      {{kTool, "--model", dir.file("nowhere"), "--text", "x"}, "no such file"},
  };
  for (const auto& [argv, message] : cases) {
    CAPTURE(message);
    const ProcessResult r = run_process(argv);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);
  }
}
