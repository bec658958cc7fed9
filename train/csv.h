// CSV and TSV training data: a header row naming the columns, then one record per row, RFC 4180
// quoting ("a ""quoted"", multi-line field"), CRLF or LF line ends. Each row comes out as a
// JSON object of strings keyed by the header, the records the JSONL adapter reads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "runtime/json.h"

namespace onn {

// fn(row, record, bad, end) for every data row in order (row counts from 1, the header not
// counted); `bad` is empty, or says why the row is not a record (its field count); `end` is the
// offset in `text` just past the row. A file that cannot be split into rows (an unterminated
// quote, text after a closing quote, a bad header) is an InvalidArgument naming the file and row.
using CsvRowFn = std::function<void(int64_t row, nlohmann::json& record, const std::string& bad, size_t end)>;
void for_each_csv_row(const std::string& path, std::string_view text, char separator, const CsvRowFn& fn);

}  // namespace onn
