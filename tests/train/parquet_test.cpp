// The Parquet reader against files pyarrow wrote (tests/data/make_parquet_fixtures.py:
// every codec, dictionary and plain pages, page v1 and v2, nulls, a messages list column,
// several row groups), each compared with what pyarrow read from it; then truncated,
// bit-flipped and lying footers, every one refused with a FormatError naming the file.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "train/parquet_column.h"
#include "train/parquet_metadata.h"
#include "train/parquet_records.h"

using namespace onn;

namespace {

const std::string kDir = std::string(ONN_TEST_DATA_DIR) + "/parquet/";
const char* const kFixtures[] = {"pairs_none", "pairs_snappy", "pairs_zstd", "pairs_gzip", "pairs_plain_v2",
                                 "typed_nulls", "messages", "qa"};

std::vector<uint8_t> bytes_of(const std::string& path) {
  const std::string s = read_file(path, size_t{1} << 24);
  return {s.begin(), s.end()};
}

// The rows of a file as the records reader gives them (a row group at a time), counted
// against the footer.
nlohmann::json rows_of(const std::string& path) {
  nlohmann::json rows = nlohmann::json::array();
  for_each_parquet_row(path, [&](int64_t row, nlohmann::json& record) {
    CHECK(row == static_cast<int64_t>(rows.size()) + 1);
    rows.push_back(record);
  });
  CHECK(static_cast<int64_t>(rows.size()) == read_parquet_metadata(path).num_rows);
  return rows;
}

}  // namespace

TEST_CASE("parquet: every fixture's rows decode to exactly the records pyarrow reads") {
  for (const std::string name : kFixtures) {
    CAPTURE(name);
    const nlohmann::json want = read_json_file(kDir + name + ".rows.json");
    const nlohmann::json got = rows_of(kDir + name + ".parquet");
    REQUIRE(got.size() == want.size());
    for (size_t r = 0; r < want.size(); ++r) {
      CAPTURE(r);
      CHECK(got[r] == want[r]);
    }
  }
}

TEST_CASE("parquet: every fixture's footer reads as pyarrow read it") {
  for (const std::string name : kFixtures) {
    CAPTURE(name);
    const ParquetMetadata m = read_parquet_metadata(kDir + name + ".parquet");
    const nlohmann::json want = read_json_file(kDir + name + ".meta.json");
    CHECK(m.num_rows == want["num_rows"].get<int64_t>());
    CHECK(m.created_by == want["created_by"].get<std::string>());
    REQUIRE(m.leaves.size() == want["leaves"].size());
    for (size_t i = 0; i < m.leaves.size(); ++i) {
      const nlohmann::json& w = want["leaves"][i];
      CHECK(m.leaves[i].dotted_path() == w["path"].get<std::string>());
      CHECK(parquet_type_name(m.leaves[i].type) == w["physical_type"].get<std::string>());
      CHECK(m.leaves[i].max_definition_level == w["max_definition_level"].get<int>());
      CHECK(m.leaves[i].max_repetition_level == w["max_repetition_level"].get<int>());
    }
    REQUIRE(m.row_groups.size() == want["row_groups"].size());
    for (size_t g = 0; g < m.row_groups.size(); ++g) {
      const nlohmann::json& wg = want["row_groups"][g];
      CHECK(m.row_groups[g].num_rows == wg["num_rows"].get<int64_t>());
      REQUIRE(m.row_groups[g].columns.size() == wg["columns"].size());
      for (size_t c = 0; c < m.row_groups[g].columns.size(); ++c) {
        const ParquetColumnChunk& cc = m.row_groups[g].columns[c];
        const nlohmann::json& w = wg["columns"][c];
        CHECK(parquet_codec_name(cc.codec) == w["codec"].get<std::string>());
        CHECK(cc.num_values == w["num_values"].get<int64_t>());
        CHECK(cc.data_page_offset == w["data_page_offset"].get<int64_t>());
        CHECK(cc.dictionary_page_offset == w["dictionary_page_offset"].get<int64_t>());
        CHECK(cc.total_compressed_size == w["total_compressed_size"].get<int64_t>());
        CHECK(cc.total_uncompressed_size == w["total_uncompressed_size"].get<int64_t>());
        std::vector<std::string> enc;
        for (int32_t e : cc.encodings) enc.push_back(parquet_encoding_name(e));
        std::sort(enc.begin(), enc.end());
        enc.erase(std::unique(enc.begin(), enc.end()), enc.end());
        CHECK(enc == w["encodings"].get<std::vector<std::string>>());
      }
    }
  }
  // The shapes the fixtures promise: several row groups, every codec, both page kinds.
  CHECK(read_parquet_metadata(kDir + "pairs_zstd.parquet").row_groups.size() == 3);
  CHECK(read_parquet_metadata(kDir + "messages.parquet").leaves[0].max_repetition_level == 1);
  CHECK(read_parquet_metadata(kDir + "pairs_plain_v2.parquet").row_groups[0].columns[0].dictionary_page_offset == -1);
}

TEST_CASE("parquet: truncated, bit-flipped and lying footers are refused with the file named") {
  for (const std::string name : {"pairs_snappy", "messages"}) {
    CAPTURE(name);
    const std::vector<uint8_t> file = bytes_of(kDir + name + ".parquet");
    const std::string src = name + ".parquet";
    // Every truncation: only FormatError, naming the file.
    for (size_t n = 0; n < file.size(); ++n) {
      try {
        parse_parquet_footer(std::span<const uint8_t>(file.data(), n), n, src);
        FAIL("a truncation to ", n, " bytes parsed");
      } catch (const FormatError& e) {
        REQUIRE(std::string(e.what()).rfind(src + ": ", 0) == 0);
      }
    }
    // Every bit of the footer and trailer flipped: refused, or read into metadata whose every
    // column chunk lies inside the file (the checks hold), never anything else.
    const ParquetMetadata clean = parse_parquet_footer(file, file.size(), src);
    int refused = 0, read = 0;
    for (size_t at = clean.footer_offset; at < file.size(); ++at) {
      for (int bit = 0; bit < 8; ++bit) {
        std::vector<uint8_t> f = file;
        f[at] ^= static_cast<uint8_t>(1u << bit);
        try {
          const ParquetMetadata m = parse_parquet_footer(f, f.size(), src);
          for (const ParquetRowGroup& g : m.row_groups)
            for (const ParquetColumnChunk& c : g.columns)
              REQUIRE(static_cast<uint64_t>(c.first_byte() + c.total_compressed_size) <= m.footer_offset);
          ++read;
        } catch (const FormatError& e) {
          REQUIRE(std::string(e.what()).rfind(src + ": ", 0) == 0);
          ++refused;
        }
      }
    }
    MESSAGE(name << ": of " << refused + read << " single-bit flips, " << refused << " refused, " << read
                 << " read (a flip in a statistic, a name or an offset that stays in range)");
    CHECK(refused > 0);
  }
  std::vector<uint8_t> f = bytes_of(kDir + "pairs_none.parquet");
  const uint32_t lie = static_cast<uint32_t>(f.size());
  std::memcpy(f.data() + f.size() - 8, &lie, 4);
  CHECK_THROWS_WITH_AS(parse_parquet_footer(f, f.size(), "lie.parquet"),
                       doctest::Contains("lie.parquet: the footer length"), FormatError);
  f = bytes_of(kDir + "pairs_none.parquet");
  f[f.size() - 1] = 'X';
  CHECK_THROWS_WITH_AS(parse_parquet_footer(f, f.size(), "x.parquet"), doctest::Contains("not a Parquet file"),
                       FormatError);
}

TEST_CASE("parquet: bit flips in the page data are read or refused with the file and column named, never more") {
  for (const std::string name : {"pairs_gzip", "pairs_zstd", "pairs_plain_v2", "typed_nulls", "messages"}) {
    CAPTURE(name);
    const std::vector<uint8_t> file = bytes_of(kDir + name + ".parquet");
    const std::string src = name + ".parquet";
    const ParquetMetadata m = parse_parquet_footer(file, file.size(), src);
    int refused = 0, read = 0;
    // Every bit of the first row group's first column chunk; every 7th bit after it.
    const ParquetColumnChunk& c0 = m.row_groups[0].columns[0];
    const auto c0_end = static_cast<size_t>(c0.first_byte() + c0.total_compressed_size);
    for (size_t bit = 32; bit < m.footer_offset * 8; bit += bit / 8 < c0_end ? 1 : 7) {
      std::vector<uint8_t> f = file;
      f[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      try {
        for (size_t g = 0; g < m.row_groups.size(); ++g)
          for (size_t c = 0; c < m.leaves.size(); ++c) {
            const ParquetColumnData d = read_parquet_column(f, m, g, c, src);
            REQUIRE(static_cast<int64_t>(d.def.size()) == m.row_groups[g].columns[c].num_values);
          }
        ++read;
      } catch (const FormatError& e) {
        REQUIRE(std::string(e.what()).rfind(src + ": column ", 0) == 0);
        ++refused;
      }
    }
    MESSAGE(name << ": " << refused << " flips refused, " << read << " read (a flipped value, or a checksum-free byte)");
    CHECK(refused > 0);
  }
}
