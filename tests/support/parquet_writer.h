// A small Parquet writer for tests that need files too large to commit: required UTF-8 string
// columns, PLAIN encoding, no compression, one data page (v1) per column chunk, the rows split
// into row groups. Independent checks of the reader use the pyarrow-written fixtures in
// tests/data/parquet; a file from this writer was checked against pyarrow once
// (docs/design.md), and the tests here compare what it yields with the same rows as JSONL.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace onn::test {

// `rows` rows of the string columns `columns`, `rows_per_group` to a row group; row(r, values)
// fills row r's values, one per column. Throws std::runtime_error when the file cannot be written.
void write_string_parquet(const std::string& path, const std::vector<std::string>& columns, int64_t rows,
                          int64_t rows_per_group,
                          const std::function<void(int64_t r, std::vector<std::string>& values)>& row);

}  // namespace onn::test
