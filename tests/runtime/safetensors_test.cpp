// safetensors: every refusal on a file crafted for it, valid edge cases, round trips of
// every dtype, atomic writes, a file written by the reference Python implementation, and
// sharded models with hostile shard names.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <random>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"
#include "support/crafted.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;
namespace fs = std::filesystem;

TEST_CASE("every malformed file is refused with its reason and the file name") {
  TempDir dir;
  for (const CraftedFile& c : malformed_safetensors()) {
    CAPTURE(c.name);
    const std::string path = dir.file(c.name + ".safetensors");
    write_bytes(path, c.bytes);
    try {
      SafetensorsFile::open(path);
      FAIL("accepted ", c.name);
    } catch (const FormatError& e) {
      const std::string msg = e.what();
      CHECK(msg.rfind(path, 0) == 0);
      CHECK(msg.find(c.expected) != std::string::npos);
      CHECK(msg.find('\n') == std::string::npos);
    }
    // The in-memory parser (the fuzz target's entry) agrees.
    CHECK_THROWS_AS(SafetensorsFile::from_bytes(c.name, c.bytes), FormatError);
  }
}

TEST_CASE("valid edge cases parse") {
  for (const CraftedFile& c : valid_safetensors()) {
    CAPTURE(c.name);
    CHECK_NOTHROW(SafetensorsFile::from_bytes(c.name, c.bytes));
  }
  const auto zero = SafetensorsFile::from_bytes("z", valid_safetensors()[2].bytes);
  REQUIRE(zero.tensors().size() == 3);
  CHECK(zero.info("e").numel() == 0);
  CHECK(zero.tensor("e").shape() == Shape{0, 3});
  CHECK(zero.info("s").shape.empty());
  CHECK(zero.tensor("s").numel() == 1);
  const auto unordered = SafetensorsFile::from_bytes("u", valid_safetensors()[4].bytes);
  CHECK(unordered.tensors()[0].name == "a");  // sorted by offset
  CHECK(unordered.tensor("a").shape() == Shape{2, 2});
  CHECK(unordered.metadata().empty());
  CHECK(SafetensorsFile::from_bytes("m", valid_safetensors()[1].bytes).metadata().at("format") == "pt");
}

TEST_CASE("round trip of every dtype with metadata, header is 8-byte aligned") {
  TempDir dir;
  std::mt19937 rng(7);
  std::vector<std::pair<std::string, Tensor>> ts;
  for (DType t : kAllDTypes) {
    Tensor x = Tensor::empty(Shape{3, 7, 2}, t);
    auto* p = static_cast<uint8_t*>(x.data());
    for (size_t i = 0; i < x.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng());
    if (t == DType::boolean)
      for (size_t i = 0; i < x.nbytes(); ++i) p[i] &= 1;
    ts.emplace_back("layer." + std::string(dtype_name(t)), x);
  }
  ts.emplace_back("empty", Tensor::empty(Shape{0}, DType::f32));
  const std::string path = dir.file("rt.safetensors");
  write_safetensors(path, ts, {{"format", "pt"}, {"note", "h\xc3\xa9llo"}});

  const SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.header_bytes() % 8 == 0);
  CHECK(f.metadata().at("note") == "h\xc3\xa9llo");
  CHECK(f.tensors().size() == ts.size());
  for (const auto& [name, x] : ts) {
    CAPTURE(name);
    const Tensor y = f.tensor(name);
    CHECK(y.dtype() == x.dtype());
    CHECK(y.shape() == x.shape());
    CHECK((x.nbytes() == 0 || std::memcmp(y.data(), x.data(), x.nbytes()) == 0));
  }
  CHECK_THROWS_WITH_AS(f.tensor("nope"), doctest::Contains("no tensor named \"nope\""), InvalidArgument);
}

TEST_CASE("aligned tensors are views of the mapping, unaligned ones are copied") {
  TempDir dir;
  const std::string path = dir.file("a.safetensors");
  std::vector<std::pair<std::string, Tensor>> ts = {{"w", Tensor::from_floats(Shape{2}, {1.0f, 2.0f})}};
  write_safetensors(path, ts);
  const SafetensorsFile f = SafetensorsFile::open(path);
  const Tensor w = f.tensor("w");
  CHECK(w.data() == static_cast<const void*>(f.bytes(f.info("w")).data()));
  // A header padded to 4k+1 bytes puts the data at an address that is not 4-byte aligned.
  std::string hdr = R"({"v":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  while (hdr.size() % 4 != 1) hdr += ' ';
  std::vector<uint8_t> img = safetensors_image(hdr, 0);
  const float val = 3.5f;
  const auto* vb = reinterpret_cast<const uint8_t*>(&val);
  img.insert(img.end(), vb, vb + 4);
  write_bytes(dir.file("u.safetensors"), img);
  const SafetensorsFile u = SafetensorsFile::open(dir.file("u.safetensors"));
  const Tensor v = u.tensor("v");
  CHECK(v.data() != static_cast<const void*>(u.bytes(u.info("v")).data()));
  CHECK(v.data_as<float>()[0] == 3.5f);
}

TEST_CASE("a failed write leaves nothing behind, and an existing file untouched") {
  TempDir dir;
  const std::string path = dir.file("out.safetensors");
  write_bytes(path, {1, 2, 3});
  const Tensor x = Tensor::from_floats(Shape{1}, {1.0f});
  CHECK_THROWS_AS(write_safetensors(path, {{"a", x}, {"a", x}}), InvalidArgument);
  CHECK_THROWS_AS(write_safetensors(path, {{"__metadata__", x}}), InvalidArgument);
  std::vector<TensorBytes> bad = {{"t", DType::f32, {3}, x.data(), 4}};
  CHECK_THROWS_AS(write_safetensors(path, bad), InvalidArgument);
  CHECK(fs::file_size(path) == 3);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++entries;
  CHECK(entries == 1);  // no temp files left
  CHECK_THROWS_AS(write_safetensors(dir.file("missing/dir/x.safetensors"), {{"a", x}}), IoError);
}

TEST_CASE("reads a file written by the reference implementation (Python safetensors)") {
  // tests/data/reference.safetensors is written by tests/data/make_reference.py.
  const SafetensorsFile f = SafetensorsFile::open(ONN_TEST_DATA_DIR "/reference.safetensors");
  CHECK(f.metadata().at("producer") == "safetensors-python");
  const Tensor a = f.tensor("a_f32");
  CHECK(a.shape() == Shape{2, 3});
  for (int i = 0; i < 6; ++i) CHECK(a.data_as<float>()[i] == doctest::Approx(0.5 * i - 1.0));
  const Tensor b = f.tensor("b_bf16").to_dtype(DType::f32);
  CHECK(b.data_as<float>()[1] == 1.5f);
  const Tensor c = f.tensor("c_i64");
  CHECK(c.data_as<int64_t>()[2] == -9000000000LL);
  const Tensor d = f.tensor("d_f16").to_dtype(DType::f32);
  CHECK(d.data_as<float>()[0] == 65504.0f);
  CHECK(f.tensor("e_bool").data_as<uint8_t>()[1] == 1);
  CHECK(f.tensor("f_empty").numel() == 0);
}

namespace {
void write_index(const std::string& path, const std::string& weight_map) {
  std::ofstream(path) << R"({"metadata": {"total_size": 16}, "weight_map": )" << weight_map << "}";
}
}  // namespace

TEST_CASE("sharded models load through the index") {
  TempDir dir;
  const Tensor x = Tensor::from_floats(Shape{2}, {1, 2});
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", x}});
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"b", x}, {"c", x}});
  write_index(dir.file("model.safetensors.index.json"),
              R"({"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
                  "c": "model-00002-of-00002.safetensors"})");
  const SafetensorsModel m = SafetensorsModel::open(dir.path().string());
  CHECK(m.files().size() == 2);
  CHECK(m.tensors().size() == 3);
  CHECK(m.parameter_count() == 6);
  CHECK(m.tensor("c").data_as<float>()[1] == 2.0f);
  CHECK(m.metadata().at("total_size") == "16");
}

TEST_CASE("streamed and sharded writes: one tensor at a time, transformers' layout, reloadable") {
  TempDir dir;
  // Four 64-byte tensors; the fill writes each tensor's index into every byte.
  std::vector<TensorSpec> specs;
  for (const char* n : {"d", "b", "a", "c"}) specs.push_back(TensorSpec{n, DType::f32, {4, 4}});
  std::vector<std::string> order;
  const TensorFill fill = [&](const TensorSpec& t, std::span<uint8_t> out) {
    CHECK(out.size() == 4 * static_cast<size_t>(t.shape[0] * (t.shape.size() > 1 ? t.shape[1] : 1)));
    order.push_back(t.name);
    std::memset(out.data(), t.name[0], out.size());
  };
  write_safetensors_streamed(dir.file("one.safetensors"), specs, fill, {{"k", "v"}});
  CHECK(order == std::vector<std::string>{"a", "b", "c", "d"});
  const SafetensorsFile one = SafetensorsFile::open(dir.file("one.safetensors"));
  CHECK(one.metadata().at("k") == "v");
  CHECK(one.bytes(one.info("c"))[63] == 'c');

  // 150-byte shards hold two tensors each.
  const fs::path model = dir.path() / "model";
  const std::vector<std::string> names = write_sharded_safetensors(model.string(), specs, fill, 150);
  CHECK(names == std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
  CHECK(!fs::exists(model / "model.safetensors"));
  const nlohmann::json index = nlohmann::json::parse(read_file((model / "model.safetensors.index.json").string(), 1 << 20));
  CHECK(index["metadata"]["total_size"] == 256);
  CHECK(index["weight_map"]["c"] == "model-00002-of-00002.safetensors");
  {
    const SafetensorsModel m = SafetensorsModel::open(model.string());
    CHECK(m.files().size() == 2);
    CHECK(static_cast<const uint8_t*>(m.tensor("b").data())[5] == 'b');
    CHECK(static_cast<const uint8_t*>(m.tensor("d").data())[0] == 'd');
  }
  // Three shards, then one file: stale shards and the index go, so the folder stays unambiguous.
  CHECK(write_sharded_safetensors(model.string(), specs, fill, 64).size() == 4);
  CHECK(write_sharded_safetensors(model.string(), specs, fill, 100).size() == 4);
  CHECK(!fs::exists(model / "model-00001-of-00002.safetensors"));
  CHECK(write_sharded_safetensors(model.string(), specs, fill, 1000) == std::vector<std::string>{"model.safetensors"});
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(model)) ++files;
  CHECK(files == 1);
  CHECK(static_cast<const uint8_t*>(SafetensorsModel::open(model.string()).tensor("a").data())[1] == 'a');
  // A tensor that does not fit a shard gets one of its own; duplicate names are refused.
  specs.push_back(TensorSpec{"big", DType::f32, {100}});
  CHECK(write_sharded_safetensors(model.string(), specs, fill, 150).size() == 3);
  specs.push_back(TensorSpec{"a", DType::f32, {1}});
  CHECK_THROWS_WITH_AS(write_sharded_safetensors(model.string(), specs, fill, 150),
                       doctest::Contains("duplicate tensor name \"a\""), InvalidArgument);
}

TEST_CASE("hostile shard names are refused") {
  TempDir outer;
  fs::create_directory(outer.path() / "model");
  const std::string dir = (outer.path() / "model").string();
  const Tensor x = Tensor::from_floats(Shape{1}, {1});
  write_safetensors(outer.file("outside.safetensors"), {{"a", x}});
  write_safetensors(dir + "/inside.safetensors", {{"a", x}});
  fs::create_symlink(outer.path() / "outside.safetensors", fs::path(dir) / "link.safetensors");
  const std::string index = dir + "/model.safetensors.index.json";
  struct Case {
    std::string map, expected;
  };
  const Case cases[] = {
      {R"({"a": "../outside.safetensors"})", "contains \"..\""},
      {R"({"a": "sub/../../outside.safetensors"})", "contains \"..\""},
      {"{\"a\": \"" + outer.file("outside.safetensors") + "\"}", "is an absolute path"},
      {R"({"a": "link.safetensors"})", "resolves outside the model folder"},
      {R"({"a": "missing.safetensors"})", "does not exist"},
      {R"({"a": ""})", "is an empty name"},
      {R"({"a": 3})", "is not a string"},
      {R"({"zzz": "inside.safetensors"})", "does not hold it"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.map);
    write_index(index, c.map);
    CHECK_THROWS_WITH_AS(SafetensorsModel::open(dir), doctest::Contains(c.expected.c_str()), FormatError);
  }
  std::ofstream(index) << R"({"weight_map": [1]})";
  CHECK_THROWS_WITH_AS(SafetensorsModel::open(dir), doctest::Contains("missing \"weight_map\" object"), FormatError);
  std::ofstream(index) << R"({"weight_map": {"a": "inside.safetensors"}, "weight_map": {}})";
  CHECK_THROWS_WITH_AS(SafetensorsModel::open(dir), doctest::Contains("duplicate key"), FormatError);
}

TEST_CASE("model folder resolution") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(SafetensorsModel::open(dir.path().string()), doctest::Contains("no model.safetensors"), IoError);
  CHECK_THROWS_AS(SafetensorsModel::open(dir.file("nope")), IoError);
  const Tensor x = Tensor::from_floats(Shape{1}, {1});
  write_safetensors(dir.file("adapter_model.safetensors"), {{"a", x}});
  CHECK(SafetensorsModel::open(dir.path().string()).tensors().size() == 1);  // the only file
  write_safetensors(dir.file("model.safetensors"), {{"m", x}, {"n", x}});
  CHECK(SafetensorsModel::open(dir.path().string()).tensors().size() == 2);  // model.safetensors wins
}

namespace {

// This process's resident pages (/proc/self/statm), mapped file pages included, read through an
// open descriptor into a stack buffer so that measuring allocates nothing.
int64_t resident_pages(int statm) {
  char text[128] = {};
  REQUIRE(::pread(statm, text, sizeof text - 1, 0) > 0);
  long long size = 0, resident = 0;
  REQUIRE(std::sscanf(text, "%lld %lld", &size, &resident) == 2);
  return resident;
}

}  // namespace

TEST_CASE("a loaded tensor's pages are given back: release drops them from memory, and they read again") {
  TempDir dir;
  std::vector<float> a(1 << 20), b(1 << 20);  // 4 MiB each
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i), b[i] = -static_cast<float>(i);
  write_safetensors(dir.file("w.safetensors"), {{"a", DType::f32, {1 << 20}, a.data(), a.size() * 4},
                                                {"b", DType::f32, {1 << 20}, b.data(), b.size() * 4}});
  const SafetensorsModel m = SafetensorsModel::open(dir.file("w.safetensors"));
  const SafetensorsFile& f = m.files()[0];
  const std::span<const uint8_t> ab = f.bytes(f.info("a")), bb = f.bytes(f.info("b"));
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < ab.size(); i += 4096) sink = sink + ab[i] + bb[i];  // touch every page
  const auto pages = static_cast<int64_t>(ab.size()) / ::sysconf(_SC_PAGESIZE);
  const int statm = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  REQUIRE(statm >= 0);
  const int64_t before = resident_pages(statm);
  m.release("a");
  const int64_t dropped = before - resident_pages(statm);
  ::close(statm);
  MESSAGE("pages of a: " << pages << ", resident pages dropped: " << dropped);
  // a's pages left this process's memory (measured: 1001-1024 of 1024; without release none
  // do) and b's stayed.
  CHECK(dropped >= pages * 3 / 4);
  CHECK(dropped <= pages + 16);
  m.release("no such tensor");  // nothing
  CHECK(std::memcmp(m.tensor("a").data(), a.data(), a.size() * 4) == 0);  // read again from the file
}
