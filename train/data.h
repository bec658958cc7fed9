// Training data files: JSONL, JSON, Parquet and CSV/TSV records (text, input/output, prompt/completion,
// instruction/input/output, chat messages), plain text and Markdown, or a folder of them.
// Every record is validated before training starts; a bad one is an error naming the file,
// the line (JSONL) or record number (JSON) and the field, unless bad records are skipped.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/chat.h"

namespace onn {

// One training example as read from a file.
struct Example {
  enum class Kind { text, pair, chat };
  Kind kind = Kind::text;
  std::string text;                   // text
  std::string prompt, completion;     // pair: loss on the completion only (by default)
  std::vector<ChatMessage> messages;  // chat: loss on assistant turns only (by default)
  std::string where;                  // "data.jsonl:17", "data.parquet:row 17", for messages
};

struct DataReport {
  std::vector<std::string> files;    // read, in order
  int64_t records = 0;               // kept
  std::vector<std::string> skipped;  // "data.jsonl:17: field \"output\" missing", one per skipped record
};

// --data-columns: "question=input,answer=output" renames a record's fields (JSONL, JSON, Parquet
// and CSV alike) before its layout is chosen. InvalidArgument naming the flag for a bad list.
using ColumnMap = std::vector<std::pair<std::string, std::string>>;
ColumnMap parse_column_map(const std::string& spec);

struct ReadOptions {
  bool skip_bad_records = false;  // else the first bad record throws InvalidArgument
  ColumnMap columns;              // renames applied to every record
  int64_t max_file_bytes = int64_t{1} << 34;
};

// fn(example) for every record of a file (.jsonl, .json, .parquet, .csv, .tsv, .txt, .md) or of
// every such file of a folder (sorted by name, hidden files and other extensions left out), in
// order; fn returns false to stop reading. JSONL, CSV/TSV and Parquet files are streamed from a
// mapping that is released behind the reader, so a file larger than RAM reads in bounded
// memory; a .json array and a .txt/.md document are read whole (up to max_file_bytes).
// InvalidArgument for bad records (unless skipped), an unsupported file type, an empty dataset;
// IoError for unreadable files.
using ExampleFn = std::function<bool(Example& e)>;
void for_each_example(const std::string& path, const ReadOptions& opt, DataReport& report, const ExampleFn& fn);
// Every example at once (small data, tests).
std::vector<Example> read_examples(const std::string& path, const ReadOptions& opt, DataReport& report);

// The prompt of an instruction record, Alpaca's layout: "### Instruction:\n{instruction}\n\n"
// ["### Input:\n{input}\n\n"] "### Response:\n".
std::string instruction_prompt(const std::string& instruction, const std::string& input);

}  // namespace onn
