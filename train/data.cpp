// Reading and validating training records.
#include "train/data.h"

#include <algorithm>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "train/csv.h"
#include "train/parquet_records.h"

namespace onn {

namespace {

namespace fs = std::filesystem;

// The data file types, by extension.
bool data_extension(const std::string& ext) {
  return ext == ".jsonl" || ext == ".json" || ext == ".parquet" || ext == ".csv" || ext == ".tsv" || ext == ".txt" ||
         ext == ".md";
}
constexpr const char* kDataTypes = ".jsonl, .json, .parquet, .csv, .tsv, .txt or .md";

// The record layouts, recognised by their keys.
enum class Schema { none, text, input_output, prompt_completion, instruction, messages };

Schema schema_of(const nlohmann::json& r) {
  if (!r.is_object()) return Schema::none;
  if (r.contains("messages")) return Schema::messages;
  if (r.contains("instruction")) return Schema::instruction;
  if (r.contains("prompt") || r.contains("completion")) return Schema::prompt_completion;
  if (r.contains("input") || r.contains("output")) return Schema::input_output;
  if (r.contains("text")) return Schema::text;
  return Schema::none;
}

const char* schema_name(Schema s) {
  switch (s) {
    case Schema::text: return "{\"text\"}";
    case Schema::input_output: return "{\"input\", \"output\"}";
    case Schema::prompt_completion: return "{\"prompt\", \"completion\"}";
    case Schema::instruction: return "{\"instruction\", \"input\"?, \"output\"}";
    case Schema::messages: return "{\"messages\"}";
    case Schema::none: break;
  }
  return "none";
}

// Thrown for one bad record; the caller adds the position.
struct BadRecord {
  std::string why;
};

std::string string_field(const nlohmann::json& r, const char* name, bool required = true) {
  if (!r.contains(name)) {
    if (required) throw BadRecord{"field \"" + std::string(name) + "\" missing"};
    return {};
  }
  const nlohmann::json& v = r[name];
  if (!v.is_string()) throw BadRecord{"field \"" + std::string(name) + "\" must be a string"};
  return v.get<std::string>();
}

Example parse_record(const nlohmann::json& r, Schema schema) {
  if (!r.is_object()) throw BadRecord{"a record must be a JSON object"};
  Example e;
  switch (schema) {
    case Schema::text:
      e.kind = Example::Kind::text;
      e.text = string_field(r, "text");
      if (e.text.empty()) throw BadRecord{"field \"text\" is empty"};
      break;
    case Schema::input_output:
      e.kind = Example::Kind::pair;
      e.prompt = string_field(r, "input");
      e.completion = string_field(r, "output");
      break;
    case Schema::prompt_completion:
      e.kind = Example::Kind::pair;
      e.prompt = string_field(r, "prompt");
      e.completion = string_field(r, "completion");
      break;
    case Schema::instruction: {
      e.kind = Example::Kind::pair;
      const std::string instruction = string_field(r, "instruction");
      e.prompt = instruction_prompt(instruction, string_field(r, "input", false));
      e.completion = string_field(r, "output");
      break;
    }
    case Schema::messages: {
      e.kind = Example::Kind::chat;
      const nlohmann::json& m = r["messages"];
      if (!m.is_array()) throw BadRecord{"field \"messages\" must be a list"};
      bool assistant = false;
      for (size_t i = 0; i < m.size(); ++i) {
        const std::string at = "messages[" + std::to_string(i) + "]";
        if (!m[i].is_object()) throw BadRecord{"field \"" + at + "\" must be an object"};
        for (const char* f : {"role", "content"}) {
          if (!m[i].contains(f)) throw BadRecord{"field \"" + at + "." + f + "\" missing"};
          if (!m[i][f].is_string()) throw BadRecord{"field \"" + at + "." + f + "\" must be a string"};
        }
        const std::string role = m[i]["role"].get<std::string>();
        if (role != "system" && role != "user" && role != "assistant")
          throw BadRecord{"field \"" + at + ".role\" is \"" + role + "\"; roles: system, user, assistant"};
        assistant |= role == "assistant";
        e.messages.push_back({role, m[i]["content"].get<std::string>()});
      }
      if (!assistant) throw BadRecord{"field \"messages\" has no assistant turn to learn from"};
      break;
    }
    case Schema::none:
      throw BadRecord{"no known fields; records are " + std::string(schema_name(Schema::text)) + ", " +
                      schema_name(Schema::input_output) + ", " + schema_name(Schema::prompt_completion) + ", " +
                      schema_name(Schema::instruction) + " or " + schema_name(Schema::messages)};
  }
  if (schema != Schema::messages && schema != Schema::text && e.completion.empty())
    throw BadRecord{std::string("field \"") + (schema == Schema::prompt_completion ? "completion" : "output") +
                    "\" is empty"};
  return e;
}

// The field names a record layout reads: what --data-columns may map to.
constexpr const char* kLayoutFields[] = {"text", "input", "output", "prompt", "completion", "instruction", "messages"};

// Thrown when the example callback asks to stop; for_each_example catches it.
struct StopReading {};

// A mapped file read front to back drops what lies behind the reader every this many bytes.
constexpr size_t kReleaseBytes = size_t{8} << 20;

class ReadBehind {
 public:
  explicit ReadBehind(const MappedFile& f) : f_(f) {}
  // The reader is at `at`: the bytes before it may leave memory.
  void passed(size_t at) {
    if (at - released_ < kReleaseBytes) return;
    f_.release(released_, at);
    released_ = at;
  }

 private:
  const MappedFile& f_;
  size_t released_ = 0;
};

// The first invalid UTF-8 byte of a mapped file, scanned in windows released behind the scan
// (npos: none). A sequence cut by a window's end is scanned again from its start.
size_t find_invalid_utf8_in(const MappedFile& f) {
  const std::string_view all(reinterpret_cast<const char*>(f.data()), f.size());
  constexpr size_t kLongestSequence = 4;
  ReadBehind behind(f);
  for (size_t at = 0; at < all.size();) {
    const size_t n = std::min(kReleaseBytes, all.size() - at);
    const size_t bad = find_invalid_utf8(all.substr(at, n));
    const bool last = at + n == all.size();
    if (bad != std::string_view::npos && (last || bad + kLongestSequence <= n)) return at + bad;
    at = bad == std::string_view::npos ? at + n : at + bad;
    behind.passed(at);
  }
  return std::string_view::npos;
}

class Reader {
 public:
  Reader(const ReadOptions& opt, DataReport& report, const ExampleFn& fn) : opt_(opt), report_(report), fn_(fn) {}

  // One record at `where`; the file's schema is the first record's.
  void record(const std::string& where, const nlohmann::json* r, const std::string& parse_error, Schema& schema) {
    try {
      if (!r) throw BadRecord{parse_error};
      const nlohmann::json& rec = opt_.columns.empty() ? *r : renamed(*r);
      if (schema == Schema::none) schema = schema_of(rec);
      Example e = parse_record(rec, schema);
      e.where = where;
      emit(e);
    } catch (const BadRecord& b) {
      const std::string msg = where + ": " + b.why;
      if (!opt_.skip_bad_records) throw InvalidArgument(msg);
      report_.skipped.push_back(msg);
    }
  }

  // The record with --data-columns' renames (a field that is absent stays absent).
  const nlohmann::json& renamed(const nlohmann::json& r) {
    renamed_ = r;
    if (!renamed_.is_object()) return renamed_;
    for (const auto& [from, to] : opt_.columns) {
      if (!renamed_.contains(from)) continue;
      nlohmann::json v = std::move(renamed_[from]);
      renamed_.erase(from);
      renamed_[to] = std::move(v);
    }
    return renamed_;
  }

  void emit(Example& e) {
    ++report_.records;
    if (!fn_(e)) throw StopReading{};
  }

  void jsonl(const std::string& path, const MappedFile& file) {
    const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
    Schema schema = Schema::none;
    size_t line = 0;
    ReadBehind behind(file);
    for (size_t start = 0; start < text.size();) {
      behind.passed(start);
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      ++line;
      const std::string_view l(text.data() + start, end - start);
      start = end + 1;
      if (l.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank lines
      const std::string where = path + ":" + std::to_string(line);
      try {
        const nlohmann::json r = parse_json_strict(l, where);
        record(where, &r, "", schema);
      } catch (const FormatError& e) {
        // parse_json_strict names the source itself; keep only the reason.
        std::string why = e.what();
        if (why.rfind(where + ": ", 0) == 0) why = why.substr(where.size() + 2);
        record(where, nullptr, "invalid JSON: " + why, schema);
      }
    }
  }

  void json(const std::string& path, const std::string& text) {
    nlohmann::json doc;
    try {
      doc = parse_json_strict(text, path);
    } catch (const FormatError& e) {
      throw InvalidArgument(e.what());  // the whole file is unusable: never skipped
    }
    if (!doc.is_array()) throw InvalidArgument(path + ": a .json data file must hold an array of records");
    Schema schema = Schema::none;
    for (size_t i = 0; i < doc.size(); ++i)
      record(path + ": record " + std::to_string(i + 1), &doc[i], "", schema);
  }

  void plain(const std::string& path, const std::string& text) {
    const size_t bad = find_invalid_utf8(text);
    if (bad != std::string::npos)
      throw InvalidArgument(path + ": invalid UTF-8 at byte " + std::to_string(bad));
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
      const std::string msg = path + ": the file is empty";
      if (!opt_.skip_bad_records) throw InvalidArgument(msg);
      report_.skipped.push_back(msg);
      return;
    }
    Example e;
    e.kind = Example::Kind::text;
    e.text = text;
    e.where = path;
    emit(e);
  }

  // A Parquet file's rows, a row group at a time; its columns must fit one record layout.
  void parquet(const std::string& path) {
    report_.files.push_back(path);
    Schema schema = Schema::none;
    for_each_parquet_row(path, [&](int64_t row, nlohmann::json& r) {
      if (row == 1) check_columns(path, r);
      record(path + ":row " + std::to_string(row), &r, "", schema);
    });
  }

  // A table's columns (its first row's fields) must name a record layout.
  void check_columns(const std::string& path, const nlohmann::json& first) {
    if (schema_of(opt_.columns.empty() ? first : renamed(first)) != Schema::none) return;
    std::string cols;
    for (const auto& [k, v] : first.items()) cols += (cols.empty() ? "" : ", ") + k;
    throw InvalidArgument(path + ": no record layout fits its columns (" + cols + "); layouts are " +
                          schema_name(Schema::text) + ", " + schema_name(Schema::input_output) + ", " +
                          schema_name(Schema::prompt_completion) + ", " + schema_name(Schema::instruction) + " and " +
                          schema_name(Schema::messages) +
                          "; map other names with --data-columns, e.g. question=input,answer=output");
  }

  // CSV / TSV rows; a row with the wrong number of fields is a bad record.
  void csv(const std::string& path, const MappedFile& file, char separator) {
    const size_t bad = find_invalid_utf8_in(file);
    if (bad != std::string::npos) throw InvalidArgument(path + ": invalid UTF-8 at byte " + std::to_string(bad));
    const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
    Schema schema = Schema::none;
    ReadBehind behind(file);
    for_each_csv_row(path, text, separator, [&](int64_t row, nlohmann::json& r, const std::string& why, size_t end) {
      if (row == 1 && why.empty()) check_columns(path, r);
      record(path + ":row " + std::to_string(row), why.empty() ? &r : nullptr, why, schema);
      behind.passed(end);
    });
  }

  void file(const fs::path& p) {
    const std::string ext = p.extension().string(), path = p.string();
    if (!data_extension(ext))
      throw InvalidArgument(path + ": unsupported data file type \"" + ext + "\" (use " + kDataTypes + ")");
    if (ext == ".parquet") return parquet(path);
    if (ext == ".jsonl" || ext == ".csv" || ext == ".tsv") {  // streamed from a mapping
      const std::shared_ptr<const MappedFile> file = MappedFile::open(path);
      report_.files.push_back(path);
      if (ext == ".jsonl") return jsonl(path, *file);
      return csv(path, *file, ext == ".csv" ? ',' : '\t');
    }
    const std::string text = read_file(path, static_cast<size_t>(opt_.max_file_bytes));
    report_.files.push_back(path);
    if (ext == ".json")
      json(path, text);
    else
      plain(path, text);
  }

 private:
  const ReadOptions& opt_;
  DataReport& report_;
  const ExampleFn& fn_;
  nlohmann::json renamed_;
};

// Every data file of `path` (a file, or a folder's files sorted by name) through `reader`.
void read_all(const std::string& path, Reader& reader) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(path)) {
      const std::string name = e.path().filename().string(), ext = e.path().extension().string();
      if (name.empty() || name[0] == '.' || !e.is_regular_file()) continue;
      if (data_extension(ext)) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) throw InvalidArgument(path + ": no " + std::string(kDataTypes) + " files in the folder");
    for (const fs::path& f : files) reader.file(f);
  } else {
    if (!fs::exists(path, ec)) throw IoError(path + ": no such file or folder");
    reader.file(path);
  }
}

}  // namespace

ColumnMap parse_column_map(const std::string& spec) {
  ColumnMap map;
  if (spec.empty()) return map;
  size_t start = 0;
  for (;;) {
    const size_t comma = spec.find(',', start);
    const std::string item = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw InvalidArgument("--data-columns: \"" + item + "\" is not COLUMN=FIELD (e.g. question=input,answer=output)");
    const std::string to = item.substr(eq + 1);
    if (std::find(std::begin(kLayoutFields), std::end(kLayoutFields), to) == std::end(kLayoutFields))
      throw InvalidArgument("--data-columns: \"" + to + "\" is not a record field (text, input, output, prompt, "
                            "completion, instruction, messages)");
    map.emplace_back(item.substr(0, eq), to);
    if (comma == std::string::npos) return map;
    start = comma + 1;
  }
}

std::string instruction_prompt(const std::string& instruction, const std::string& input) {
  std::string p = "### Instruction:\n" + instruction + "\n\n";
  if (!input.empty()) p += "### Input:\n" + input + "\n\n";
  return p + "### Response:\n";
}

void for_each_example(const std::string& path, const ReadOptions& opt, DataReport& report, const ExampleFn& fn) {
  Reader reader(opt, report, fn);
  try {
    read_all(path, reader);
  } catch (const StopReading&) {
    return;
  }
  if (report.records == 0)
    throw InvalidArgument(path + ": no usable records" +
                          (report.skipped.empty() ? std::string() : " (" + std::to_string(report.skipped.size()) +
                                                                        " skipped; the first: " + report.skipped[0] + ")"));
}

std::vector<Example> read_examples(const std::string& path, const ReadOptions& opt, DataReport& report) {
  std::vector<Example> out;
  for_each_example(path, opt, report, [&](Example& e) {
    out.push_back(std::move(e));
    return true;
  });
  return out;
}


}  // namespace onn
