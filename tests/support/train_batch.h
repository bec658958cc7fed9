// A micro-batch of random documents packed back to back, for the training-pass tests.
#pragma once

#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "model/training.h"
#include "support/grad_check.h"

namespace onn::test {

// Documents of the given lengths with random token ids; labels are the next token within a
// document, ignored at each document's last token and at position `ignored_pos`.
inline TrainBatch packed_train_batch(Context& ctx, int64_t vocab, const std::vector<int64_t>& lens,
                                     int64_t ignored_pos, std::mt19937& rng) {
  std::vector<int32_t> ids, pos, labels;
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(vocab) - 1);
  for (int64_t len : lens) {
    const size_t start = ids.size();
    for (int64_t i = 0; i < len; ++i) {
      ids.push_back(tok(rng));
      pos.push_back(static_cast<int32_t>(i));
    }
    for (int64_t i = 0; i < len; ++i)
      labels.push_back(i + 1 < len && i != ignored_pos ? ids[start + static_cast<size_t>(i) + 1] : kIgnoreIndex);
  }
  TrainBatch b;
  b.ids = i32_tensor(ids);
  b.positions = i32_tensor(pos);
  b.labels = i32_tensor(labels);
  b.seqs = packed_seqs(ctx, lens);
  return b;
}

}  // namespace onn::test
