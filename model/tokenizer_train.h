// A byte-level BPE tokenizer.json learned from text (GPT-2 style: byte-level pre-tokenizer
// with its split regex, merges of the most frequent adjacent pair), as onn-init writes it for
// a new model. With no text (or vocab_size <= 256 + specials) it is the byte-level base
// vocabulary alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace onn {

// Ids: the 256 byte symbols first, then one per merge, then the special tokens (the first is
// the BOS the template adds). vocab_size counts all of them.
nlohmann::json train_byte_level_bpe(const std::string& text, int64_t vocab_size,
                                    const std::vector<std::string>& specials);

}  // namespace onn
