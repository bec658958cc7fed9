// The rows of a Parquet file as JSON records, the shape the JSONL adapter reads: a top-level
// column is a field (null where it is null); a list of structs (pyarrow's three-level list,
// the layout chat data uses: messages: [{role, content}]) is an array of objects. The file is
// mapped and decoded a row group at a time, so only one row group's columns are held at once.
// Deeper or other nesting is refused by name with the file and column (InvalidArgument).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/json.h"

namespace onn {

// fn(row, record) for every row of the file in order (row counts from 1).
void for_each_parquet_row(const std::string& path, const std::function<void(int64_t row, nlohmann::json& record)>& fn);

}  // namespace onn
