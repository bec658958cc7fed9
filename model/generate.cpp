// The generation loop on top of LlamaModel's prefill / decode and the CPU sampling helpers.
#include "model/generate.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <unordered_set>

#include "runtime/error.h"

namespace onn {

namespace {

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// Row 0 of device logits (1, V) as host floats, the first `limit` of them: a model may have
// more embedding rows than its tokenizer has ids (padded vocabularies), and an id no text
// maps to is never generated.
std::vector<float> host_row(Context& ctx, const Tensor& logits, int64_t limit) {
  ctx.synchronize();
  const Tensor h = logits.to(Device::cpu());
  std::vector<float> row(static_cast<size_t>(std::min(h.dim(1), limit)));
  for (size_t i = 0; i < row.size(); ++i) row[i] = static_cast<float>(load_as_double(h.data(), h.dtype(), i));
  return row;
}

// Length of the longest suffix of `text` that is a proper prefix of some stop string.
size_t held_for_stop(const std::string& text, const std::vector<std::string>& stops) {
  size_t held = 0;
  for (const std::string& s : stops)
    for (size_t n = std::min(text.size(), s.size() - 1); n > held; --n)
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        held = n;
        break;
      }
  return held;
}

}  // namespace

GenerateResult generate(Context& ctx, const LlamaModel& model, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_token,
                        WeightFeed* feed) {
  ONN_CHECK_ARG(!prompt.empty(), "generate: the prompt has no tokens");
  ONN_CHECK_ARG(opt.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0");
  ONN_CHECK_ARG(opt.repetition_penalty > 0, "generate: repetition_penalty must be positive");
  for (const std::string& s : opt.stop) ONN_CHECK_ARG(!s.empty(), "generate: an empty stop string");
  const ModelConfig& cfg = model.config();
  const int64_t total = static_cast<int64_t>(prompt.size()) + opt.max_new_tokens;
  ONN_CHECK_ARG(static_cast<int64_t>(prompt.size()) <= cfg.max_position_embeddings, "generate: the prompt has ",
                prompt.size(), " tokens, more than the model's ", cfg.max_position_embeddings);
  std::unordered_set<int32_t> eos;
  for (int64_t e : cfg.eos_token_ids) eos.insert(static_cast<int32_t>(e));
  if (tok.eos_id()) eos.insert(*tok.eos_id());
  eos.insert(opt.extra_eos.begin(), opt.extra_eos.end());

  GenerateResult r;
  KVCache cache = model.make_cache(ctx, 1, std::min(total, cfg.max_position_embeddings));
  auto t0 = std::chrono::steady_clock::now();
  Tensor logits = model.prefill(ctx, cache, {prompt}, feed);
  std::vector<float> row = host_row(ctx, logits, tok.vocab_size());
  r.prefill_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();

  std::mt19937_64 rng(opt.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::unordered_set<int32_t> seen(prompt.begin(), prompt.end());
  StreamDecoder stream(tok, true);
  std::string pending;  // decoded text not yet handed out (a possible stop-string prefix)
  r.finish_reason = "length";
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    if (opt.repetition_penalty != 1.0)
      for (int32_t id : seen) {
        float& x = row[static_cast<size_t>(id)];
        x = x < 0 ? static_cast<float>(x * opt.repetition_penalty) : static_cast<float>(x / opt.repetition_penalty);
      }
    double u = uniform(rng);
    if (u >= 1.0) u = std::nextafter(1.0, 0.0);
    const int32_t next = static_cast<int32_t>(sample_token(row, opt.sampling, u));
    r.tokens.push_back(next);
    seen.insert(next);
    const bool at_eos = eos.count(next) > 0;
    if (!at_eos) pending += stream.push(next);
    // A stop string ends generation: the text stops before it.
    size_t cut = std::string::npos;
    for (const std::string& s : opt.stop) cut = std::min(cut, (r.text + pending).find(s));
    if (cut != std::string::npos) {
      const std::string piece = (r.text + pending).substr(r.text.size(), cut - r.text.size());
      r.text += piece;
      if (on_token) on_token(piece);
      r.finish_reason = "stop";
      break;
    }
    const bool last = at_eos || step + 1 == opt.max_new_tokens || cache.lens[0] >= cache.max_len;
    if (at_eos) r.finish_reason = "eos";
    // The last token's text includes whatever was held back.
    const size_t hold = last ? 0 : held_for_stop(pending, opt.stop);
    std::string out = pending.substr(0, pending.size() - hold);
    pending.erase(0, out.size());
    if (last) out += stream.finish();
    r.text += out;
    if (on_token) on_token(out);
    if (last) break;
    logits = model.decode(ctx, cache, {next}, feed);
    row = host_row(ctx, logits, tok.vocab_size());
  }
  r.decode_ms = ms_since(t0);
  return r;
}

}  // namespace onn
