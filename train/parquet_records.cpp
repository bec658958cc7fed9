#include "train/parquet_records.h"

#include <map>
#include <memory>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "train/parquet_column.h"
#include "train/parquet_metadata.h"

namespace onn {

namespace {

nlohmann::json json_of(const ParquetValue& v) {
  return std::visit(
      [](const auto& x) -> nlohmann::json {
        if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::monostate>) return nullptr;
        else return x;
      },
      v);
}

// A top-level field: one flat leaf, or a list of structs whose leaves are its fields.
struct Field {
  std::string name;
  std::vector<size_t> leaves;
  bool list = false;
  // A list's definition levels: below `present` the list is null, below `element` it is empty
  // here, below `filled` the element is null.
  int present = 0, element = 0, filled = 0;
};

std::vector<Field> fields_of(const ParquetMetadata& m, const std::string& path) {
  std::vector<Field> fields;
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < m.leaves.size(); ++i) {
    const ParquetLeaf& leaf = m.leaves[i];
    const auto& reps = leaf.path_repetition;
    const bool flat = leaf.path.size() == 1 && leaf.max_repetition_level == 0;
    const bool list_of_struct = leaf.path.size() == 4 && leaf.max_repetition_level == 1 &&
                                reps[1] == ParquetRepetition::repeated;
    if (!flat && !list_of_struct)
      throw InvalidArgument(path + ": column " + leaf.dotted_path() +
                            ": nesting other than a top-level column or a list of structs (messages: [{role, "
                            "content}]) is not supported");
    auto [it, added] = by_name.emplace(leaf.path[0], fields.size());
    if (added) {
      Field f;
      f.name = leaf.path[0];
      f.list = list_of_struct;
      if (list_of_struct) {
        f.present = reps[0] != ParquetRepetition::required ? 1 : 0;
        f.element = f.present + 1;
        f.filled = f.element + (reps[2] != ParquetRepetition::required ? 1 : 0);
      }
      fields.push_back(f);
    }
    Field& f = fields[it->second];
    if (f.list != list_of_struct || (!f.list && !f.leaves.empty()))
      throw InvalidArgument(path + ": column " + leaf.dotted_path() + " does not fit the shape of " + f.name);
    f.leaves.push_back(i);
  }
  return fields;
}

// Row r's entries [begin[r], begin[r + 1]) of one column's level entries.
std::vector<size_t> row_starts(const ParquetColumnData& d) {
  std::vector<size_t> s;
  for (size_t i = 0; i < d.rep.size(); ++i)
    if (d.rep[i] == 0) s.push_back(i);
  s.push_back(d.rep.size());
  return s;
}

nlohmann::json list_value(const Field& f, const std::vector<ParquetColumnData>& cols, const ParquetMetadata& m,
                          size_t begin, size_t end) {
  const ParquetColumnData& first = cols[f.leaves[0]];
  if (first.def[begin] < f.present) return nullptr;
  nlohmann::json list = nlohmann::json::array();
  if (first.def[begin] < f.element) return list;
  for (size_t i = begin; i < end; ++i) {
    if (first.def[i] < f.filled) {
      list.push_back(nullptr);
      continue;
    }
    nlohmann::json element = nlohmann::json::object();
    for (size_t leaf : f.leaves) element[m.leaves[leaf].path.back()] = json_of(cols[leaf].values[i]);
    list.push_back(std::move(element));
  }
  return list;
}

}  // namespace

void for_each_parquet_row(const std::string& path, const std::function<void(int64_t, nlohmann::json&)>& fn) {
  const std::shared_ptr<const MappedFile> file = MappedFile::open(path);
  const std::span<const uint8_t> bytes(file->data(), file->size());
  const ParquetMetadata m = parse_parquet_file(bytes, path);
  const std::vector<Field> fields = fields_of(m, path);
  int64_t row = 0;
  for (size_t g = 0; g < m.row_groups.size(); ++g) {
    std::vector<ParquetColumnData> cols;
    for (size_t c = 0; c < m.leaves.size(); ++c) cols.push_back(read_parquet_column(bytes, m, g, c, path));
    // Every field's rows, by its first leaf's repetition levels; the leaves of one list agree.
    std::vector<std::vector<size_t>> starts;
    for (const Field& f : fields) {
      starts.push_back(row_starts(cols[f.leaves[0]]));
      for (size_t leaf : f.leaves)
        if (cols[leaf].rep != cols[f.leaves[0]].rep || cols[leaf].def.size() != cols[f.leaves[0]].def.size())
          throw FormatError(path + ": row group " + std::to_string(g) + ": the columns of " + f.name + " disagree on its lists");
      if (static_cast<int64_t>(starts.back().size()) - 1 != m.row_groups[g].num_rows)
        throw FormatError(path + ": row group " + std::to_string(g) + ": column " + f.name + " holds " +
                          std::to_string(starts.back().size() - 1) + " rows, the row group " +
                          std::to_string(m.row_groups[g].num_rows));
    }
    for (int64_t r = 0; r < m.row_groups[g].num_rows; ++r) {
      nlohmann::json record = nlohmann::json::object();
      for (size_t k = 0; k < fields.size(); ++k) {
        const Field& f = fields[k];
        const size_t begin = starts[k][static_cast<size_t>(r)], end = starts[k][static_cast<size_t>(r) + 1];
        record[f.name] = f.list ? list_value(f, cols, m, begin, end) : json_of(cols[f.leaves[0]].values[begin]);
      }
      fn(++row, record);
    }
    for (const ParquetColumnChunk& c : m.row_groups[g].columns)  // read: its pages may leave memory
      file->release(static_cast<size_t>(c.first_byte()), static_cast<size_t>(c.first_byte() + c.total_compressed_size));
  }
}

}  // namespace onn
