#include "train/csv.h"

#include <set>
#include <vector>

#include "runtime/error.h"

namespace onn {

namespace {

// Splits the text into rows of fields, one row at a time.
class CsvRows {
 public:
  CsvRows(const std::string& path, std::string_view text, char sep) : path_(path), t_(text), sep_(sep) {}

  size_t position() const { return pos_; }

  // The next row's fields; false at the end of the text.
  bool next(std::vector<std::string>& fields, int64_t row) {
    fields.clear();
    if (pos_ >= t_.size()) return false;
    for (;;) {
      fields.push_back(field(row));
      if (pos_ >= t_.size()) return true;
      const char c = t_[pos_++];
      if (c == sep_) continue;
      if (c == '\r' && pos_ < t_.size() && t_[pos_] == '\n') ++pos_;
      return true;  // '\n' or '\r\n' (field() stops only at the separator or a line end)
    }
  }

 private:
  std::string field(int64_t row) {
    std::string f;
    if (pos_ < t_.size() && t_[pos_] == '"') {
      for (++pos_;; ++pos_) {
        if (pos_ >= t_.size()) fail(row, "a quoted field is not closed");
        if (t_[pos_] != '"') {
          f += t_[pos_];
        } else if (pos_ + 1 < t_.size() && t_[pos_ + 1] == '"') {
          f += '"';
          ++pos_;
        } else {
          ++pos_;
          break;
        }
      }
      if (pos_ < t_.size() && t_[pos_] != sep_ && t_[pos_] != '\n' && t_[pos_] != '\r')
        fail(row, "text after a closing quote");
      return f;
    }
    for (; pos_ < t_.size() && t_[pos_] != sep_ && t_[pos_] != '\n' && t_[pos_] != '\r'; ++pos_) {
      if (t_[pos_] == '"') fail(row, "a quote inside an unquoted field (quote the field and double the quote)");
      f += t_[pos_];
    }
    return f;
  }

  [[noreturn]] void fail(int64_t row, const std::string& why) const {
    throw InvalidArgument(path_ + ":" + (row == 0 ? std::string("header") : "row " + std::to_string(row)) + ": " + why);
  }

  const std::string& path_;
  std::string_view t_;
  char sep_;
  size_t pos_ = 0;
};

}  // namespace

void for_each_csv_row(const std::string& path, std::string_view text, char separator, const CsvRowFn& fn) {
  CsvRows rows(path, text, separator);
  std::vector<std::string> header, fields;
  if (!rows.next(header, 0)) throw InvalidArgument(path + ": the file is empty (a header row is needed)");
  std::set<std::string> seen;
  for (const std::string& h : header)
    if (h.empty() || !seen.insert(h).second)
      throw InvalidArgument(path + ":header: column names must be non-empty and distinct (\"" + h + "\")");
  for (int64_t row = 1; rows.next(fields, row); ++row) {
    if (fields.size() == 1 && fields[0].empty()) {  // a blank line
      --row;
      continue;
    }
    nlohmann::json record = nlohmann::json::object();
    std::string bad;
    if (fields.size() != header.size())
      bad = std::to_string(fields.size()) + " fields where the header has " + std::to_string(header.size());
    else
      for (size_t i = 0; i < header.size(); ++i) record[header[i]] = fields[i];
    fn(row, record, bad, rows.position());
  }
}

}  // namespace onn
