// TensorBoard event files: CRC-32C against published check values, and a training run's
// event file decoded here from the wire format (TFRecord lengths and masked CRCs verified,
// Event / Summary.Value fields read) holding the same loss, lr, grad_norm, tokens/s and
// validation points as the run's NDJSON events.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "runtime/file_util.h"
#include "support/test_util.h"
#include "train/tensorboard.h"
#include "train/trainer.h"

using namespace onn;
using namespace onn::test;
namespace fs = std::filesystem;

namespace {

std::span<const uint8_t> bytes_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// A protobuf reader for the few fields of Event and Summary.Value.
struct Reader {
  const std::string& s;
  size_t at = 0, end = 0;
  bool done() const { return at >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(at < end);
      const uint8_t b = static_cast<uint8_t>(s[at++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  }
  template <typename T>
  T fixed() {
    REQUIRE(at + sizeof(T) <= end);
    T v;
    std::memcpy(&v, s.data() + at, sizeof(T));
    at += sizeof(T);
    return v;
  }
};

struct Point {
  int64_t step;
  std::string tag;
  float value;
};

// Every scalar of a tfevents file; checks the framing and that the first event is the
// file_version one.
std::vector<Point> read_events(const std::string& path) {
  const std::string f = read_file(path, size_t{1} << 26);
  std::vector<Point> points;
  size_t at = 0;
  bool first = true;
  while (at < f.size()) {
    REQUIRE(at + 12 <= f.size());
    uint64_t len;
    uint32_t crc;
    std::memcpy(&len, f.data() + at, 8);
    std::memcpy(&crc, f.data() + at + 8, 4);
    CHECK(crc == masked_crc32c(bytes_of(f.substr(at, 8))));
    REQUIRE(at + 12 + len + 4 <= f.size());
    const std::string data = f.substr(at + 12, len);
    std::memcpy(&crc, f.data() + at + 12 + len, 4);
    CHECK(crc == masked_crc32c(bytes_of(data)));
    at += 12 + len + 4;
    Reader r{data, 0, data.size()};
    int64_t step = -1;
    std::string version;
    while (!r.done()) {
      const uint64_t key = r.varint();
      if (key == ((1 << 3) | 1)) {
        CHECK(r.fixed<double>() > 1.6e9);  // wall time: seconds since 1970
      } else if (key == (2 << 3)) {
        step = static_cast<int64_t>(r.varint());
      } else if (key == ((3 << 3) | 2)) {
        const uint64_t n = r.varint();
        version = data.substr(r.at, n);
        r.at += n;
      } else if (key == ((5 << 3) | 2)) {
        const uint64_t summary_len = r.varint();
        const size_t summary_end = r.at + summary_len;
        while (r.at < summary_end) {
          REQUIRE(r.varint() == ((1 << 3) | 2));  // Summary.value
          const uint64_t vlen = r.varint();
          Reader v{data, r.at, r.at + vlen};
          Point p{step, "", NAN};
          while (!v.done()) {
            const uint64_t k = v.varint();
            if (k == ((1 << 3) | 2)) {
              const uint64_t n = v.varint();
              p.tag = data.substr(v.at, n);
              v.at += n;
            } else {
              REQUIRE(k == ((2 << 3) | 5));
              p.value = v.fixed<float>();
            }
          }
          points.push_back(p);
          r.at = v.end;
        }
      } else {
        FAIL("unexpected field ", key);
      }
    }
    if (first) CHECK(version == "brain.Event:2");
    first = false;
  }
  return points;
}

}  // namespace

TEST_CASE("CRC-32C check values and TFRecord's mask") {
  CHECK(crc32c(bytes_of("123456789")) == 0xE3069283u);
  CHECK(crc32c(bytes_of(std::string(32, '\0'))) == 0x8A9136AAu);
  CHECK(crc32c(bytes_of(std::string(32, '\xff'))) == 0x62A8AB43u);
  // Continuing from a prefix's CRC gives the whole string's.
  CHECK(crc32c(bytes_of("56789"), crc32c(bytes_of("1234"))) == 0xE3069283u);
  const uint32_t c = 0xE3069283u;
  CHECK(masked_crc32c(bytes_of("123456789")) == ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST_CASE("a training run's TensorBoard file holds its loss, lr, grad_norm, tokens/s and validation points") {
  TempDir dir;
  const std::string data = dir.file("d.jsonl");
  {
    std::ofstream f(data);
    for (int i = 0; i < 24; ++i) f << "{\"input\":\"Q" << i << " is\",\"output\":\" A" << i % 5 << "\"}\n";
  }
  TrainConfig c;
  c.model_dir = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa";
  c.data = data;
  c.out_dir = dir.file("run");
  c.device = "cpu";
  c.steps = 5;
  c.micro_batch = 2;
  c.val_split = 0.2;
  c.eval_every = 2;
  c.lora.rank = 4;
  std::map<std::string, std::map<int64_t, double>> want;
  const TrainResult r = train(c, false, [&](const nlohmann::ordered_json& e) {
    if (e["type"] == "step") {
      CHECK(e["energy_j"].is_null());  // no energy counter on the CPU
      for (const char* k : {"loss", "lr", "grad_norm", "tokens_per_s"})
        want[std::string("train/") + k][e["step"].get<int64_t>()] = e[k].get<double>();
    } else if (e["type"] == "val") {
      want["val/loss"][e["step"].get<int64_t>()] = e["loss"].get<double>();
      want["val/perplexity"][e["step"].get<int64_t>()] = e["perplexity"].get<double>();
    }
  });
  CHECK(r.energy_j < 0);
  REQUIRE(fs::exists(r.tensorboard));
  CHECK(fs::path(r.tensorboard).parent_path() == fs::path(c.out_dir) / "tensorboard");
  CHECK(fs::path(r.tensorboard).filename().string().rfind("events.out.tfevents.", 0) == 0);
  std::map<std::string, std::map<int64_t, double>> got;
  for (const Point& p : read_events(r.tensorboard)) got[p.tag][p.step] = p.value;
  REQUIRE(got.size() == want.size());
  CHECK(want["val/loss"].size() == 3);  // steps 2, 4 and 5
  for (const auto& [tag, series] : want) {
    CAPTURE(tag);
    REQUIRE(got[tag].size() == series.size());
    for (const auto& [step, v] : series) CHECK(got[tag][step] == static_cast<float>(v));
  }
}
