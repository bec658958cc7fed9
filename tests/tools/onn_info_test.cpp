// onn-info as a user runs it: exact listing of a valid file, JSON output, and for every
// malformed file exit code 2 with exactly one line on stderr naming the file and reason.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "runtime/json.h"
#include "runtime/safetensors.h"
#include "support/crafted.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {
const std::string kOnnInfo = ONN_INFO_PATH;

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}
}  // namespace

TEST_CASE("onn-info lists a valid file exactly") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  Tensor w = Tensor::from_floats(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Tensor::empty(Shape{3}, DType::bf16);
  b.fill_bytes(0x3f);
  Tensor e = Tensor::empty(Shape{0}, DType::i64);
  write_safetensors(path, {{"layer.weight", w}, {"layer.bias", b}, {"empty", e}}, {{"format", "pt"}});
  const ProcessResult r = run_process({kOnnInfo, path});
  CHECK(r.exit_code == 0);
  CHECK(r.err.empty());
  const std::string expected = path +
                               ": 3 tensor(s) in 1 file(s), 9 parameters, 30 B of tensor data\n"
                               "metadata:\n"
                               "  format: pt\n"
                               "name          dtype  shape   bytes\n"
                               "empty         I64    (0)     0\n"
                               "layer.bias    BF16   (3)     6\n"
                               "layer.weight  F32    (2, 3)  24\n";
  CHECK(r.out == expected);

  const ProcessResult j = run_process({kOnnInfo, path, "--json"});
  CHECK(j.exit_code == 0);
  const auto doc = parse_json_strict(j.out, "onn-info --json");
  CHECK(doc["tensor_count"] == 3);
  CHECK(doc["parameters"] == 9);
  CHECK(doc["tensor_bytes"] == 30);
  CHECK(doc["metadata"]["format"] == "pt");
  CHECK(doc["tensors"][2]["name"] == "layer.weight");
  CHECK(doc["tensors"][2]["shape"] == nlohmann::json::array({2, 3}));
  CHECK(doc["tensors"][2]["dtype"] == "F32");
}

TEST_CASE("onn-info refuses every malformed file with exit 2 and one line") {
  TempDir dir;
  for (const CraftedFile& c : malformed_safetensors()) {
    CAPTURE(c.name);
    const std::string path = dir.file(c.name + ".safetensors");
    write_bytes(path, c.bytes);
    const ProcessResult r = run_process({kOnnInfo, path});
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.rfind("onn-info: error: " + path + ": ", 0) == 0);
    CHECK(r.err.find(c.expected) != std::string::npos);
  }
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  CHECK(files == malformed_safetensors().size());  // nothing written beside the inputs
}

TEST_CASE("onn-info keeps control characters from a file out of the terminal") {
  TempDir dir;
  const std::string path = dir.file("c.safetensors");
  write_safetensors(path, {{"evil\x1b[2Jname", Tensor::from_floats(Shape{1}, {1.0f})}}, {{"k", "v\x07"}});
  const ProcessResult r = run_process({kOnnInfo, path});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find('\x1b') == std::string::npos);
  CHECK(r.out.find('\x07') == std::string::npos);
  CHECK(r.out.find("evil?[2Jname") != std::string::npos);
}

TEST_CASE("onn-info usage errors and other bad input") {
  TempDir dir;
  const ProcessResult none = run_process({kOnnInfo});
  CHECK(none.exit_code == 2);
  CHECK(count_lines(none.err) == 1);
  const ProcessResult missing = run_process({kOnnInfo, dir.file("nope.safetensors")});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("no such file or folder") != std::string::npos);
  const ProcessResult empty_dir = run_process({kOnnInfo, dir.path().string()});
  CHECK(empty_dir.exit_code == 2);
  CHECK(empty_dir.err.find("no model.safetensors") != std::string::npos);
  const ProcessResult flag = run_process({kOnnInfo, "--bogus"});
  CHECK(flag.exit_code == 2);
  CHECK(count_lines(flag.err) == 1);
  const ProcessResult both = run_process({kOnnInfo, "--hardware", "x"});
  CHECK(both.exit_code == 2);
  std::ofstream(dir.file("model.safetensors.index.json")) << R"({"weight_map": {"a": "../../etc/passwd"}})";
  const ProcessResult shard = run_process({kOnnInfo, dir.path().string()});
  CHECK(shard.exit_code == 2);
  CHECK(shard.err.find("contains \"..\"") != std::string::npos);
  const ProcessResult help = run_process({kOnnInfo, "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("--hardware") != std::string::npos);
}

TEST_CASE("onn-info --hardware and --self-check") {
  const ProcessResult h = run_process({kOnnInfo, "--hardware", "--no-measure", "--json"});
  CHECK(h.exit_code == 0);
  const auto doc = parse_json_strict(h.out, "onn-info --hardware --json");
  CHECK(doc["cpu"]["threads"].get<int>() >= 1);
  CHECK(doc["cuda"].contains("device_count"));
  const ProcessResult s = run_process({kOnnInfo, "--self-check"});
  CHECK(s.exit_code == 0);
  CHECK(s.out.find(" passed, 0 failed\n") != std::string::npos);
  CHECK(s.out.find("ok    attention (packed, GQA) forward + backward on the CPU") != std::string::npos);
  CHECK(s.out.find("ok    chunked LM head + cross-entropy on the CPU") != std::string::npos);
}
