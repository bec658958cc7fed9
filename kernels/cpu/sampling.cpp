// Sampling on the CPU: argmax, the temperature / top-k / top-p / min-p filters over one row,
// the draw, and argmax over rows (threaded over chunks of the vocabulary).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/backends.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/sampling.h"
#include "runtime/error.h"

namespace onn {

int64_t argmax(std::span<const float> logits) {
  int64_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i)
    if (!std::isnan(logits[i]) && (best < 0 || logits[i] > logits[static_cast<size_t>(best)]))
      best = static_cast<int64_t>(i);
  return best;
}

std::vector<double> sampling_probs(std::span<const float> logits, const SamplingParams& p) {
  ONN_CHECK_ARG(!logits.empty(), "sampling: empty logits row");
  ONN_CHECK_ARG(p.top_k >= 0, "sampling: top_k must be >= 0, got ", p.top_k);
  ONN_CHECK_ARG(p.top_p > 0.0f && p.top_p <= 1.0f, "sampling: top_p must be in (0, 1], got ", p.top_p);
  ONN_CHECK_ARG(p.min_p >= 0.0f && p.min_p <= 1.0f, "sampling: min_p must be in [0, 1], got ", p.min_p);
  const size_t v = logits.size();
  std::vector<double> prob(v, 0.0);
  if (p.temperature <= 0.0f) {
    const int64_t a = argmax(logits);
    ONN_CHECK_ARG(a >= 0, "sampling: every logit is NaN");
    prob[static_cast<size_t>(a)] = 1.0;
    return prob;
  }
  // Token order by logit, largest first (stable: ties keep the lower id first).
  std::vector<size_t> order(v);
  std::iota(order.begin(), order.end(), size_t{0});
  const auto key = [&](size_t i) { return std::isnan(logits[i]) ? -INFINITY : static_cast<double>(logits[i]); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) > key(b); });
  size_t keep = v;
  if (p.top_k > 0) keep = std::min(keep, static_cast<size_t>(p.top_k));
  const double top = key(order[0]) / p.temperature;
  ONN_CHECK_ARG(std::isfinite(top), "sampling: no finite logit");
  std::vector<double> e(keep);
  double sum = 0;
  for (size_t r = 0; r < keep; ++r) {
    e[r] = std::exp(key(order[r]) / p.temperature - top);
    sum += e[r];
  }
  if (p.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p (at least one token)
    double acc = 0;
    size_t r = 0;
    while (r < keep) {
      acc += e[r] / sum;
      ++r;
      if (acc >= p.top_p) break;
    }
    keep = r;
  }
  if (p.min_p > 0.0f) {  // e[0] is the largest: p_r / p_0 = e[r] / e[0]
    size_t r = 1;
    while (r < keep && e[r] >= p.min_p * e[0]) ++r;
    keep = r;
  }
  double kept = 0;
  for (size_t r = 0; r < keep; ++r) kept += e[r];
  for (size_t r = 0; r < keep; ++r) prob[order[r]] = e[r] / kept;
  return prob;
}

int64_t sample_token(std::span<const float> logits, const SamplingParams& p, double u) {
  ONN_CHECK_ARG(u >= 0.0 && u < 1.0, "sampling: u must be in [0, 1), got ", u);
  if (p.temperature <= 0.0f) {
    const int64_t a = argmax(logits);
    ONN_CHECK_ARG(a >= 0, "sampling: every logit is NaN");
    return a;
  }
  const std::vector<double> prob = sampling_probs(logits, p);
  double acc = 0;
  int64_t last = -1;
  for (size_t i = 0; i < prob.size(); ++i) {
    if (prob[i] == 0.0) continue;
    acc += prob[i];
    last = static_cast<int64_t>(i);
    if (u < acc) return last;
  }
  return last;  // rounding left u just above the total
}

// Rows split into chunks of kPartElements; each chunk's first maximum, then the chunks of a row
// in order (a later chunk wins only when strictly larger): the first index on ties, as serially.
void argmax_rows_cpu(const Tensor& logits, Tensor& out) {
  const int64_t n = logits.dim(0), v = logits.dim(1), chunk = cpu_kernels::kPartElements;
  const int64_t chunks = (v + chunk - 1) / chunk;
  std::vector<int64_t> best(static_cast<size_t>(n * chunks), -1);
  std::vector<double> value(best.size(), 0.0);
  parallel_for(n * chunks, 1, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / chunks, j0 = item % chunks * chunk, j1 = std::min(v, j0 + chunk);
      int64_t b = -1;
      double bv = 0;
      for (int64_t j = j0; j < j1; ++j) {
        const double x = load_as_double(logits.data(), logits.dtype(), static_cast<size_t>(i * v + j));
        if (!std::isnan(x) && (b < 0 || x > bv)) {
          b = j;
          bv = x;
        }
      }
      best[static_cast<size_t>(item)] = b;
      value[static_cast<size_t>(item)] = bv;
    }
  });
  int32_t* o = static_cast<int32_t*>(out.data());
  for (int64_t i = 0; i < n; ++i) {
    int64_t b = -1;
    double bv = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t k = static_cast<size_t>(i * chunks + c);
      if (best[k] >= 0 && (b < 0 || value[k] > bv)) {
        b = best[k];
        bv = value[k];
      }
    }
    o[i] = static_cast<int32_t>(b);
  }
}

}  // namespace onn
