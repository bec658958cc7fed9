// F32 attention on the CPU, flash-style: a tile of query rows (the query heads that share one
// KV head, for a block of tokens) walks the keys in blocks of kKeyBlock, keeping a running max,
// denominator and output per row (online softmax), so the T x T score matrix never exists.
// Scores, softmax and both products run in f32 over a key block transposed into a local buffer,
// so the innermost loops are contiguous, fixed-length and vectorised (vec_math.h).
//
// Work items, each run whole by one thread, in a fixed order of its own (the bits do not depend
// on the thread count):
//   forward   (sequence, KV head, block of kQueryBlock tokens);
//   backward  (sequence, KV head): key blocks outer, every later query inner; dK and dV of the
//             block are summed locally, dQ rows accumulate in key-block order;
//   decode    (sequence, KV head): the Tq newest queries of the group against the cache (F32,
//             or BF16 widened as the tile reads it).
// The F64 path stays the plain formula (kernels/cpu/attention.cpp): the reference this one and
// the finite-difference tests are checked against.
#include "kernels/cpu/attention_tiled.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "runtime/dtype.h"
#include "runtime/parallel.h"

namespace onn::cpu_kernels {

namespace {

constexpr int64_t kKeyBlock = 64;
constexpr int64_t kQueryBlock = 32;

// Keys and values of one KV head: row j at k + j * stride; F32, or BF16 bits (a decode cache).
template <typename E>
struct KvRows {
  const E* k;
  const E* v;
  int64_t stride;
};

inline float widen(float x) { return x; }
inline float widen(uint16_t bf16) { return bf16_bits_to_f32(bf16); }

// The key block [k0, k0 + n) transposed: out[e * kKeyBlock + j] = rows[(k0 + j) * stride + e],
// zero past n.
template <typename E>
void transpose_block(const E* rows, int64_t stride, int64_t k0, int64_t n, int64_t d, float* out) {
  std::fill(out, out + d * kKeyBlock, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const E* r = rows + (k0 + j) * stride;
    for (int64_t e = 0; e < d; ++e) out[e * kKeyBlock + j] = widen(r[e]);
  }
}

// s[j] = sum_e q[e] * t[e * kKeyBlock + j] for the kKeyBlock keys of a transposed block.
template <int kD>
inline void block_dots(const float* q, const float* t, int64_t d_rt, float* s) {
  const int64_t d = kD > 0 ? kD : d_rt;
  float acc[kKeyBlock] = {};
  for (int64_t e = 0; e < d; ++e) {
    const float qe = q[e];
    for (int64_t j = 0; j < kKeyBlock; ++j) acc[j] += qe * t[e * kKeyBlock + j];
  }
  std::copy(acc, acc + kKeyBlock, s);
}

// y[0, d) += sum_{j < n} w[j] * rows[j * stride + e], in j order.
template <int kD, typename E>
inline void add_weighted_rows(const float* w, int64_t n, const E* rows, int64_t stride, int64_t d_rt, float* y) {
  if constexpr (kD > 0) {
    float a[kD];
    std::copy(y, y + kD, a);
    for (int64_t j = 0; j < n; ++j) {
      const E* r = rows + j * stride;
      for (int64_t e = 0; e < kD; ++e) a[e] += w[j] * widen(r[e]);
    }
    std::copy(a, a + kD, y);
  } else {
    for (int64_t j = 0; j < n; ++j)
      for (int64_t e = 0; e < d_rt; ++e) y[e] += w[j] * widen(rows[j * stride + e]);
  }
}

// y[0, d) += a * x[0, d) (x and y do not overlap, so the loop vectorises).
template <int kD>
inline void add_scaled(float a, const float* __restrict x, int64_t d_rt, float* __restrict y) {
  const int64_t d = kD > 0 ? kD : d_rt;
  for (int64_t e = 0; e < d; ++e) y[e] += a * x[e];
}

// The query rows of one item, gathered: rows (token t, head g) of a group in token-major order,
// with the scratch attend_tile uses; one per part, reused by its items.
struct QueryTile {
  int64_t m = 0;
  std::vector<float> q, out, lse, kt, run_max, run_sum;
  std::vector<int64_t> pos;
  void resize(int64_t rows, int64_t d) {
    m = rows;
    q.resize(static_cast<size_t>(m * d));
    out.resize(static_cast<size_t>(m * d));
    lse.resize(static_cast<size_t>(m));
    pos.resize(static_cast<size_t>(m));
    kt.resize(static_cast<size_t>(d * kKeyBlock));
    run_max.assign(static_cast<size_t>(m), -INFINITY);
    run_sum.assign(static_cast<size_t>(m), 0.0f);
  }
};

// One query tile: rows r < m of t.q (m x d) at key positions t.pos[r] (row r sees keys
// 0 .. pos[r]) against kv, with the online softmax. Writes t.out (m x d, normalised) and t.lse[r]
// (the log of row r's denominator; scores include `scale`).
template <int kD, typename E>
void attend_tile(QueryTile& t, int64_t d_rt, float scale, KvRows<E> kv) {
  const int64_t d = kD > 0 ? kD : d_rt, m = t.m;
  const float* q = t.q.data();
  const int64_t* pos = t.pos.data();
  float *out = t.out.data(), *lse = t.lse.data(), *kt = t.kt.data();
  std::vector<float>&run_max = t.run_max, &run_sum = t.run_sum;
  const int64_t last = *std::max_element(pos, pos + m);
  std::fill(out, out + m * d, 0.0f);
  float s[kKeyBlock];
  for (int64_t k0 = 0; k0 <= last; k0 += kKeyBlock) {
    const int64_t block = std::min(kKeyBlock, last + 1 - k0);
    transpose_block(kv.k, kv.stride, k0, block, d, kt);
    for (int64_t r = 0; r < m; ++r) {
      const int64_t valid = std::min(block, pos[r] + 1 - k0);
      if (valid <= 0) continue;
      block_dots<kD>(q + r * d, kt, d, s);
      for (int64_t j = 0; j < kKeyBlock; ++j) s[j] *= scale;
      const float block_max = lane_max(s, valid);
      const float mx = std::max(run_max[static_cast<size_t>(r)], block_max);
      const float keep = run_max[static_cast<size_t>(r)] == -INFINITY ? 0.0f : std::exp(run_max[static_cast<size_t>(r)] - mx);
      for (int64_t j = 0; j < kKeyBlock; ++j) s[j] = j < valid ? exp_approx(s[j] - mx) : 0.0f;
      run_sum[static_cast<size_t>(r)] = run_sum[static_cast<size_t>(r)] * keep + lane_sum(s, valid);
      run_max[static_cast<size_t>(r)] = mx;
      float* o = out + r * d;
      for (int64_t e = 0; e < d; ++e) o[e] *= keep;
      add_weighted_rows<kD>(s, valid, kv.v + k0 * kv.stride, kv.stride, d, o);
    }
  }
  for (int64_t r = 0; r < m; ++r) {
    const float inv = 1.0f / run_sum[static_cast<size_t>(r)];
    for (int64_t e = 0; e < d; ++e) out[r * d + e] *= inv;
    lse[r] = run_max[static_cast<size_t>(r)] + std::log(run_sum[static_cast<size_t>(r)]);
  }
}

// Gradients of one (sequence, KV head): tokens [start, end) of the sequence.
template <int kD>
void backward_tile(const AttentionDims& a, const AttentionGrads& g, int64_t start, int64_t end, int64_t kv,
                   float scale) {
  const int64_t d = kD > 0 ? kD : a.dim, group = a.heads / a.kv_heads, len = end - start;
  const int64_t kv_stride = a.kv_heads * d;
  const auto qrow = [&](int64_t t, int64_t gg) { return (t * a.heads + kv * group + gg) * d; };
  const auto krow = [&](int64_t t) { return (t * a.kv_heads + kv) * d; };
  // delta = rowsum(dO * O), per (token, head of the group).
  std::vector<float> delta(static_cast<size_t>(len * group));
  for (int64_t t = start; t < end; ++t)
    for (int64_t gg = 0; gg < group; ++gg) {
      delta[static_cast<size_t>((t - start) * group + gg)] = lane_dot(g.dout + qrow(t, gg), g.out + qrow(t, gg), d);
      std::fill_n(g.dq + qrow(t, gg), d, 0.0f);
    }
  std::vector<float> kt(static_cast<size_t>(d * kKeyBlock)), vt(kt.size()), dk(static_cast<size_t>(kKeyBlock * d)),
      dv(dk.size()), dq(static_cast<size_t>(d));
  float p[kKeyBlock], dp[kKeyBlock];
  for (int64_t k0 = 0; k0 < len; k0 += kKeyBlock) {
    const int64_t block = std::min(kKeyBlock, len - k0);
    transpose_block(g.k + krow(start), kv_stride, k0, block, d, kt.data());
    transpose_block(g.v + krow(start), kv_stride, k0, block, d, vt.data());
    std::fill(dk.begin(), dk.end(), 0.0f);
    std::fill(dv.begin(), dv.end(), 0.0f);
    for (int64_t t = start + k0; t < end; ++t) {
      const int64_t valid = std::min(block, t - start + 1 - k0);
      for (int64_t gg = 0; gg < group; ++gg) {
        const int64_t qr = qrow(t, gg);
        const float* qv = g.q + qr;
        const float* dov = g.dout + qr;
        const float row_lse = g.lse[t * a.heads + kv * group + gg], row_delta = delta[static_cast<size_t>((t - start) * group + gg)];
        block_dots<kD>(qv, kt.data(), d, p);
        block_dots<kD>(dov, vt.data(), d, dp);
        for (int64_t j = 0; j < kKeyBlock; ++j) {
          p[j] = j < valid ? exp_approx(p[j] * scale - row_lse) : 0.0f;
          dp[j] = p[j] * (dp[j] - row_delta);  // dS
        }
        for (int64_t j = 0; j < valid; ++j) {
          add_scaled<kD>(p[j], dov, d, dv.data() + j * d);
          add_scaled<kD>(dp[j], qv, d, dk.data() + j * d);
        }
        std::fill(dq.begin(), dq.end(), 0.0f);
        add_weighted_rows<kD>(dp, valid, g.k + krow(start + k0), kv_stride, d, dq.data());
        add_scaled<kD>(scale, dq.data(), d, g.dq + qr);
      }
    }
    for (int64_t j = 0; j < block; ++j) {
      float* dkr = g.dk + krow(start + k0 + j);
      float* dvr = g.dv + krow(start + k0 + j);
      for (int64_t e = 0; e < d; ++e) {
        dkr[e] = scale * dk[static_cast<size_t>(j * d + e)];
        dvr[e] = dv[static_cast<size_t>(j * d + e)];
      }
    }
  }
}

// fn.template operator()<kD>() with the head dim as a constant where it is a common one.
template <typename F>
inline void with_head_dim(int64_t d, F&& fn) {
  switch (d) {
    case 16: return fn.template operator()<16>();
    case 32: return fn.template operator()<32>();
    case 64: return fn.template operator()<64>();
    case 80: return fn.template operator()<80>();
    case 96: return fn.template operator()<96>();
    case 128: return fn.template operator()<128>();
    default: return fn.template operator()<0>();
  }
}

// The two bodies the threads run, each cloned per instruction set (they are what the loader's
// pick applies to: the parallel loops around them call through std::function).
ONN_CPU_CLONES void attend(QueryTile& t, int64_t d, float scale, KvRows<float> kv) {
  with_head_dim(d, [&]<int kD>() { attend_tile<kD>(t, d, scale, kv); });
}
ONN_CPU_CLONES void attend(QueryTile& t, int64_t d, float scale, KvRows<uint16_t> kv) {
  with_head_dim(d, [&]<int kD>() { attend_tile<kD>(t, d, scale, kv); });
}

ONN_CPU_CLONES void backward_item(const AttentionDims& a, const AttentionGrads& g, int64_t start, int64_t end,
                                  int64_t kv, float scale) {
  with_head_dim(a.dim, [&]<int kD>() { backward_tile<kD>(a, g, start, end, kv, scale); });
}

template <typename E>
void decode_items(const AttentionDims& a, const float* q, const E* k_cache, const E* v_cache,
                  const int32_t* lens, int64_t batch, int64_t tq, int64_t tmax, float scale, float* out) {
  const int64_t group = a.heads / a.kv_heads, d = a.dim, m = tq * group;
  parallel_for(batch * a.kv_heads, 1, [&](int64_t, int64_t begin, int64_t end) {
    QueryTile tile;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / a.kv_heads, kv = item % a.kv_heads;
      tile.resize(m, d);
      for (int64_t j = 0; j < tq; ++j)
        for (int64_t g = 0; g < group; ++g) {
          const int64_t r = j * group + g;
          std::copy_n(q + ((b * tq + j) * a.heads + kv * group + g) * d, d, tile.q.data() + r * d);
          tile.pos[static_cast<size_t>(r)] = lens[b] - tq + j;
        }
      const int64_t base = (b * tmax * a.kv_heads + kv) * d;
      const KvRows<E> rows{k_cache + base, v_cache + base, a.kv_heads * d};
      attend(tile, d, scale, rows);
      for (int64_t j = 0; j < tq; ++j)
        for (int64_t g = 0; g < group; ++g)
          std::copy_n(tile.out.data() + (j * group + g) * d, d, out + ((b * tq + j) * a.heads + kv * group + g) * d);
    }
  });
}

}  // namespace

void attention_forward_tiled(const AttentionDims& a, const float* q, const float* k, const float* v,
                             const int64_t* offsets, int64_t sequences, float scale, float* out, float* lse) {
  // Tiles (sequence, first token) in order; items are tiles x KV heads.
  std::vector<std::pair<int64_t, int64_t>> tiles;
  for (int64_t s = 0; s < sequences; ++s)
    for (int64_t t = offsets[s]; t < offsets[s + 1]; t += kQueryBlock) tiles.emplace_back(s, t);
  const int64_t items = static_cast<int64_t>(tiles.size()) * a.kv_heads, group = a.heads / a.kv_heads, d = a.dim;
  parallel_for(items, 1, [&](int64_t, int64_t begin, int64_t end) {
    QueryTile tile;
    for (int64_t item = begin; item < end; ++item) {
      const auto [s, t0] = tiles[static_cast<size_t>(item / a.kv_heads)];
      const int64_t kv = item % a.kv_heads, start = offsets[s], t1 = std::min(t0 + kQueryBlock, offsets[s + 1]);
      const int64_t m = (t1 - t0) * group;
      tile.resize(m, d);
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t g = 0; g < group; ++g) {
          const int64_t r = (t - t0) * group + g;
          std::copy_n(q + (t * a.heads + kv * group + g) * d, d, tile.q.data() + r * d);
          tile.pos[static_cast<size_t>(r)] = t - start;
        }
      const KvRows<float> rows{k + (start * a.kv_heads + kv) * d, v + (start * a.kv_heads + kv) * d, a.kv_heads * d};
      attend(tile, d, scale, rows);
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t g = 0; g < group; ++g) {
          const int64_t r = (t - t0) * group + g, h = kv * group + g;
          std::copy_n(tile.out.data() + r * d, d, out + (t * a.heads + h) * d);
          lse[t * a.heads + h] = tile.lse[static_cast<size_t>(r)];
        }
    }
  });
}

void attention_backward_tiled(const AttentionDims& a, const AttentionGrads& g, const int64_t* offsets,
                              int64_t sequences, float scale) {
  parallel_for(sequences * a.kv_heads, 1, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / a.kv_heads;
      backward_item(a, g, offsets[s], offsets[s + 1], item % a.kv_heads, scale);
    }
  });
}

void attention_decode_tiled(const AttentionDims& a, const float* q, const void* k_cache, const void* v_cache,
                            bool bf16_cache, const int32_t* lens, int64_t batch, int64_t tq, int64_t tmax, float scale,
                            float* out) {
  if (bf16_cache)
    decode_items(a, q, static_cast<const uint16_t*>(k_cache), static_cast<const uint16_t*>(v_cache), lens, batch, tq,
                 tmax, scale, out);
  else
    decode_items(a, q, static_cast<const float*>(k_cache), static_cast<const float*>(v_cache), lens, batch, tq, tmax,
                 scale, out);
}

}  // namespace onn::cpu_kernels
