// Text generation with the KV cache: prefill the prompt, then one token at a time with
// repetition penalty, temperature / top-k / top-p / min-p sampling (greedy at temperature 0),
// stop at EOS, a stop string or max_new_tokens; text is handed out as it becomes complete.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/sampling.h"
#include "model/llama.h"
#include "model/tokenizer.h"

namespace onn {

struct GenerateOptions {
  SamplingParams sampling;          // temperature <= 0: greedy
  double repetition_penalty = 1.0;  // > 1 discourages tokens already in the context (as transformers)
  uint64_t seed = 0;
  int64_t max_new_tokens = 256;
  std::vector<std::string> stop;    // generation ends before the first occurrence of any of these
  std::vector<int32_t> extra_eos;   // more end tokens (a chat format's end of turn)
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (a stop string's tokens included)
  std::string text;             // the generated text, cut before a stop string
  std::string finish_reason;    // "eos", "stop", "length"
  double prefill_ms = 0, decode_ms = 0;
};

// Only ids the tokenizer has are generated: a model with more embedding rows than tokenizer ids
// (a padded vocabulary) never samples the padding rows.
// on_token(text) runs once per generated token with the text that became final with it
// (possibly empty: an incomplete UTF-8 character or a possible stop-string prefix is held
// back until a later token, and the last token's text includes all that is left). feed: where
// the weights come from (model/stack.h; null: the model's own, resident).
GenerateResult generate(Context& ctx, const LlamaModel& model, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_token = {},
                        WeightFeed* feed = nullptr);

}  // namespace onn
