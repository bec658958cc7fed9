// The model's forward for generation and evaluation (model/llama.h): the stack's one layer loop
// over the caller's feed (or the resident weights), with the KV cache's attention for prefill
// and decode.
#include <algorithm>
#include <optional>

#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "model/llama.h"
#include "model/stack.h"
#include "runtime/error.h"

namespace onn {

namespace {

// The feed a forward runs over: the caller's, or the model's own resident weights.
class FeedOf {
 public:
  FeedOf(const LlamaModel& model, WeightFeed* feed) : feed_(feed ? feed : &resident_.emplace(model)) {}
  WeightFeed& operator*() const { return *feed_; }

 private:
  std::optional<ResidentWeights> resident_;
  WeightFeed* feed_;
};

// One lane of `ids` at `positions`; host_ids, when defined, spare a streamed gather the read back.
Lane forward_lane(const Tensor& ids, const Tensor& host_ids, const Tensor& positions, const AttentionSeqs* seqs,
                  const AttentionFn* attend) {
  ONN_CHECK_ARG(ids.rank() == 1 && ids.dtype() == DType::i32, "model forward: ids must be (N) I32, got ",
                ids.shape().str());
  Lane lane;
  lane.ids = &ids;
  lane.host_ids = host_ids;
  lane.block.positions = &positions;
  lane.block.seqs = seqs;
  lane.block.attend = attend;
  return lane;
}

// Rows [row, row + count) of sequence b of a (B, Tmax, KVH, D) cache, as (count, KVH * D).
Tensor cache_rows(const Tensor& cache, int64_t b, int64_t row, int64_t count) {
  const int64_t tmax = cache.dim(1), width = cache.dim(2) * cache.dim(3);
  return cache.slice(b, b + 1).reshape(Shape{tmax, width}).slice(row, row + count);
}

// Rows of keys or values into the cache, rounded to its dtype (a bf16 cache on the CPU).
void store_rows(Context& ctx, Tensor rows, const Tensor& src) {
  if (rows.dtype() == src.dtype())
    rows.copy_from(src, &ctx.compute());
  else
    cast(ctx, src, rows);
}

// Host ints as an I32 tensor on the host.
Tensor host_i32(const std::vector<int32_t>& v) {
  Tensor host = Tensor::empty(Shape{static_cast<int64_t>(v.size())}, DType::i32);
  std::copy(v.begin(), v.end(), host.data_as<int32_t>());
  return host;
}

void upload_lens(Context& ctx, KVCache& cache) {
  const Tensor host = host_i32(cache.lens);
  cache.lens_dev.copy_from(host, &ctx.compute());
  ctx.compute().synchronize();  // host is freed on return
}

}  // namespace

Tensor LlamaModel::hidden_states(Context& ctx, const Tensor& ids, const Tensor& positions, const AttentionSeqs& seqs,
                                 WeightFeed* feed) const {
  check_context_length(config_, seqs.max_seqlen, "model forward");
  const FeedOf f(*this, feed);
  return stack_hidden(ctx, *this, *f, {forward_lane(ids, Tensor(), positions, &seqs, nullptr)})[0];
}

Tensor LlamaModel::logits(Context& ctx, const Tensor& ids, const Tensor& positions, const AttentionSeqs& seqs,
                          WeightFeed* feed) const {
  const Tensor h = hidden_states(ctx, ids, positions, seqs, feed);
  const FeedOf f(*this, feed);
  return stack_logits(ctx, *this, *f, h);
}

double LlamaModel::loss(Context& ctx, const Tensor& ids, const Tensor& positions, const AttentionSeqs& seqs,
                        const Tensor& labels, WeightFeed* feed) const {
  check_context_length(config_, seqs.max_seqlen, "model forward");
  const FeedOf f(*this, feed);
  Lane lane = forward_lane(ids, Tensor(), positions, &seqs, nullptr);
  lane.labels = &labels;
  return stack_loss(ctx, *this, *f, {lane}, {})[0];
}

Tensor LlamaModel::prefill(Context& ctx, KVCache& cache, const std::vector<std::vector<int32_t>>& prompts,
                           WeightFeed* feed) const {
  ONN_CHECK_ARG(static_cast<int64_t>(prompts.size()) == cache.batch, "prefill: ", prompts.size(),
                " prompts for a cache of ", cache.batch, " sequences");
  std::vector<int64_t> lens;
  std::vector<int32_t> ids, pos;
  for (const auto& p : prompts) {
    ONN_CHECK_ARG(!p.empty(), "prefill: an empty prompt");
    ONN_CHECK_ARG(static_cast<int64_t>(p.size()) <= cache.max_len, "prefill: a prompt of ", p.size(),
                  " tokens does not fit a cache of ", cache.max_len);
    for (size_t i = 0; i < p.size(); ++i) {
      ONN_CHECK_ARG(p[i] >= 0 && p[i] < config_.vocab_size, "prefill: token id ", p[i], " is outside the vocabulary [0, ",
                    config_.vocab_size, ")");
      ids.push_back(p[i]);
      pos.push_back(static_cast<int32_t>(i));
    }
    lens.push_back(static_cast<int64_t>(p.size()));
  }
  const int64_t n = static_cast<int64_t>(ids.size());
  const Tensor h_ids = host_i32(ids), d_ids = h_ids.to(ctx.device()), d_pos = host_i32(pos).to(ctx.device());
  const AttentionSeqs seqs = packed_seqs(ctx, lens);
  const float scale = attention_scale();
  const AttentionFn attend = [&](size_t l, Tensor& q, Tensor& k, Tensor& v, Tensor& out, Tensor& lse) {
    attention_forward(ctx, q, k, v, seqs, scale, out, lse);
    int64_t off = 0;
    const int64_t width = k.dim(1) * k.dim(2);
    for (int64_t b = 0; b < cache.batch; ++b) {
      const int64_t len = lens[static_cast<size_t>(b)];
      store_rows(ctx, cache_rows(cache.k[l], b, 0, len), k.reshape(Shape{n, width}).slice(off, off + len));
      store_rows(ctx, cache_rows(cache.v[l], b, 0, len), v.reshape(Shape{n, width}).slice(off, off + len));
      off += len;
    }
  };
  const FeedOf f(*this, feed);
  const Tensor h = stack_hidden(ctx, *this, *f, {forward_lane(d_ids, h_ids, d_pos, &seqs, &attend)})[0];
  // The last token of each prompt.
  Tensor last = Tensor::empty(Shape{cache.batch, config_.hidden_size}, dtype_, ctx.allocator());
  int64_t off = 0;
  for (int64_t b = 0; b < cache.batch; ++b) {
    off += lens[static_cast<size_t>(b)];
    last.slice(b, b + 1).copy_from(h.slice(off - 1, off), &ctx.compute());
    cache.lens[static_cast<size_t>(b)] = static_cast<int32_t>(lens[static_cast<size_t>(b)]);
  }
  return stack_logits(ctx, *this, *f, last);
}

Tensor LlamaModel::decode(Context& ctx, KVCache& cache, const std::vector<int32_t>& tokens, WeightFeed* feed) const {
  ONN_CHECK_ARG(static_cast<int64_t>(tokens.size()) == cache.batch, "decode: ", tokens.size(),
                " tokens for a cache of ", cache.batch, " sequences");
  const int64_t B = cache.batch;
  std::vector<int32_t> pos(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const int32_t t = tokens[static_cast<size_t>(b)];
    ONN_CHECK_ARG(t >= 0 && t < config_.vocab_size, "decode: token id ", t, " is outside the vocabulary [0, ",
                  config_.vocab_size, ")");
    ONN_CHECK_ARG(cache.lens[static_cast<size_t>(b)] < cache.max_len, "decode: sequence ", b,
                  " has filled its cache of ", cache.max_len, " tokens");
    pos[static_cast<size_t>(b)] = cache.lens[static_cast<size_t>(b)];
  }
  const Tensor h_ids = host_i32(tokens), d_ids = h_ids.to(ctx.device()), d_pos = host_i32(pos).to(ctx.device());
  for (auto& len : cache.lens) ++len;  // the new token is attended to as well
  upload_lens(ctx, cache);
  const float scale = attention_scale();
  const int64_t H = config_.num_attention_heads, D = config_.head_dim;
  const AttentionFn attend = [&](size_t l, Tensor& q, Tensor& k, Tensor& v, Tensor& out, Tensor&) {
    const int64_t width = k.dim(1) * k.dim(2);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = cache.lens[static_cast<size_t>(b)] - 1;
      store_rows(ctx, cache_rows(cache.k[l], b, row, 1), k.reshape(Shape{B, width}).slice(b, b + 1));
      store_rows(ctx, cache_rows(cache.v[l], b, row, 1), v.reshape(Shape{B, width}).slice(b, b + 1));
    }
    Tensor out4 = out.reshape(Shape{B, 1, H, D});
    attention_decode(ctx, q.reshape(Shape{B, 1, H, D}), cache.k[l], cache.v[l], cache.lens_dev, scale, out4);
  };
  const FeedOf f(*this, feed);
  const Tensor h = stack_hidden(ctx, *this, *f, {forward_lane(d_ids, h_ids, d_pos, nullptr, &attend)})[0];
  return stack_logits(ctx, *this, *f, h);
}

}  // namespace onn
