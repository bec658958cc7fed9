// From examples to micro-batches: tokenization with loss masks (answers only by default),
// the tokenized corpus and its cache file, the train/validation split, and the packing of
// documents into --seq-len rows with document boundaries kept (positions and attention
// restart per document), in an order that is a pure function of (seed, epoch).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/chat.h"
#include "model/tokenizer.h"
#include "model/training.h"
#include "runtime/json.h"
#include "train/data.h"

namespace onn {

struct TokenizeOptions {
  int64_t seq_len = 512;                  // longer documents: text is split, others truncated
  bool train_on_inputs = false;           // loss on prompts and user turns too
  std::optional<ChatFormat> chat_format;  // for chat records; else the tokenizer's template
};

// Documents back to back: document d is tokens [offsets[d], offsets[d+1]). The arrays are views
// of `storage`: the mapped cache file (pages come in as batches read them, so a corpus larger
// than RAM trains) or vectors in memory. Copies share the storage.
struct Corpus {
  std::span<const int32_t> ids;
  std::span<const uint8_t> target;   // 1: token t is predicted (its label counts), 0: prompt
  std::span<const int64_t> offsets;  // documents + 1
  int64_t truncated = 0;             // prompt/chat documents cut at seq_len
  int64_t targets = 0;               // labels that count, over every document
  uint64_t fnv1a = 0;                // of the three arrays: ranks compare it
  std::shared_ptr<const void> storage;

  // A corpus over its own vectors; InvalidArgument when the offsets do not partition the ids.
  static Corpus from_vectors(std::vector<int32_t> ids, std::vector<uint8_t> target, std::vector<int64_t> offsets,
                             int64_t truncated = 0);
  int64_t documents() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t length(int64_t d) const { return offsets[static_cast<size_t>(d) + 1] - offsets[static_cast<size_t>(d)]; }
  int64_t target_tokens() const { return targets; }
};

// Tokenizes every example (text: BOS as the tokenizer adds it, EOS appended; pairs: prompt
// then completion + EOS; chat: the template, assistant turns and their end tokens as
// targets). InvalidArgument naming the record when chat data has no usable template.
Corpus tokenize_examples(const Tokenizer& tok, const std::vector<Example>& examples, const TokenizeOptions& opt);

// The cache beside a run: <path>.safetensors (doc_offsets, ids, target; the counts in its
// metadata) and <path>.json (the fingerprint it was made for, written last). Loaded, mapped,
// only when the fingerprint matches exactly and the arrays are consistent.
void save_corpus(const Corpus& c, const std::string& path, const nlohmann::json& fingerprint);
std::optional<Corpus> load_corpus(const std::string& path, const nlohmann::json& fingerprint);

// Where a training corpus comes from and how it is tokenized.
struct CorpusSource {
  std::string data;       // a file, or a folder of them
  std::string model_dir;  // its tokenizer.json (and tokenizer_config.json) are fingerprinted
  std::string cache;      // the cache path (see save_corpus)
  int64_t seq_len = 512;
  bool train_on_inputs = false;
  std::string chat_format;  // a chat_format_from_name name; "" = the tokenizer's template
  bool skip_bad_records = false;
  std::string data_columns;  // --data-columns
  bool write_cache = true;  // false: a cache is read when it matches, never written (a private
                            // file holds the tokens, removed as soon as it is mapped)
};
// The corpus of src.data tokenized with `tok`: from src.cache when its fingerprint (the data
// files' paths, sizes and times, the tokenizer files' bytes, the options) matches, else read,
// tokenized and cached there (from_cache says which; `report` is filled only when read).
// Records stream from the files into the cache (the tokens spill to disk as they are made), and
// the corpus maps the cache: neither the text nor the tokens are held in memory whole.
// InvalidArgument when no document of two or more tokens is left.
Corpus load_or_tokenize_corpus(const CorpusSource& src, const Tokenizer& tok, DataReport& report, bool& from_cache);

// The documents of `c` split into train and validation: a shuffled `fraction` (at least one
// document when fraction > 0 and there are two or more) goes to validation, fixed by seed.
void split_documents(const Corpus& c, double fraction, uint64_t seed, std::vector<int64_t>& train,
                     std::vector<int64_t>& val);

struct PackOptions {
  int64_t seq_len = 512;
  int64_t micro_batch = 1;  // rows per micro-batch
  bool packing = true;      // false: one document per row
  bool shuffle = true;
};
// One epoch's micro-batches, flat: batch b is documents docs[starts[b], starts[b + 1]) (a
// plan costs 8 bytes a document and 8 a batch).
struct EpochPlan {
  std::vector<int64_t> docs;
  std::vector<int64_t> starts{0};

  size_t size() const { return starts.size() - 1; }
  std::span<const int64_t> batch(size_t b) const {
    return std::span<const int64_t>(docs).subspan(static_cast<size_t>(starts[b]),
                                                  static_cast<size_t>(starts[b + 1] - starts[b]));
  }
  bool operator==(const EpochPlan&) const = default;
};
// One epoch's micro-batches over `docs`, shuffled by (seed, epoch). Rows are filled in order; a
// document that does not fit the current row starts the next.
EpochPlan plan_epoch(const Corpus& c, const std::vector<int64_t>& docs, const PackOptions& opt, uint64_t seed,
                     int64_t epoch);

// The micro-batch's ids, positions, labels (next token where it is a target, else ignored)
// and document packing, on ctx's device, and its ids on the host too. The uploads wait for the
// device: build a step's batches before queueing its passes.
TrainBatch make_batch(Context& ctx, const Corpus& c, std::span<const int64_t> docs);
// The labels that count in a micro-batch (host arithmetic, no device work).
int64_t batch_target_tokens(const Corpus& c, std::span<const int64_t> docs);

}  // namespace onn
