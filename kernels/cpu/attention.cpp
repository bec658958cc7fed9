// Attention on the CPU. F32 runs the flash-style tiles of kernels/cpu/attention_tiled.cpp; F64
// runs the plain formula here, per sequence and head with scores in double: the reference that
// the tiles, the CUDA kernels and finite differences are checked against. The reference is
// threaded over query rows (forward), (sequence, KV head) (backward) and (sequence, query, head)
// (decode), each part computing exactly what the serial loop did: the bits do not depend on the
// thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "kernels/backends.h"
#include "kernels/cpu/attention_tiled.h"
#include "kernels/cpu/cpu_common.h"

namespace onn {

using cpu_kernels::ptr;

namespace {

std::vector<int64_t> offsets(const AttentionSeqs& seqs, int64_t n, const char* op) {
  const int32_t* p = ptr<const int32_t>(seqs.cu_seqlens);
  const int64_t count = seqs.cu_seqlens.dim(0);
  std::vector<int64_t> o(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    o[static_cast<size_t>(i)] = p[i];
    ONN_CHECK_ARG(i > 0 ? p[i] >= p[i - 1] : p[i] == 0, op, ": cu_seqlens must start at 0 and not decrease");
    ONN_CHECK_ARG(i == 0 || p[i] - p[i - 1] <= seqs.max_seqlen, op, ": sequence ", i - 1, " is longer than max_seqlen ",
                  seqs.max_seqlen);
  }
  ONN_CHECK_ARG(o.back() == n, op, ": cu_seqlens ends at ", o.back(), " but there are ", n, " tokens");
  return o;
}

// The first token of each token's sequence.
std::vector<int64_t> sequence_starts(const std::vector<int64_t>& o, int64_t n) {
  std::vector<int64_t> first(static_cast<size_t>(n));
  for (size_t s = 0; s + 1 < o.size(); ++s)
    for (int64_t i = o[s]; i < o[s + 1]; ++i) first[static_cast<size_t>(i)] = o[s];
  return first;
}

template <typename T>
double dot(const T* a, const T* b, int64_t d) {
  double s = 0;
  for (int64_t e = 0; e < d; ++e) s += static_cast<double>(a[e]) * b[e];
  return s;
}

void reference_forward(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& o, float scale,
                       Tensor& out, Tensor& lse) {
  using T = double;
  const int64_t h = q.dim(1), d = q.dim(2), kvh = k.dim(1), group = h / kvh;
  const T *pq = ptr<T>(q), *pk = ptr<T>(k), *pv = ptr<T>(v);
  T *po = ptr<T>(out), *pl = ptr<T>(lse);
  const std::vector<int64_t> first = sequence_starts(o, q.dim(0));
  // Every query row is independent: rows in parts (each with its own scratch).
  parallel_for(q.dim(0), cpu_kernels::row_grain(h * d * 64), [&](int64_t, int64_t begin, int64_t end) {
    std::vector<double> p, acc(static_cast<size_t>(d));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t start = first[static_cast<size_t>(i)];
      for (int64_t hh = 0; hh < h; ++hh) {
        const T* qi = pq + (i * h + hh) * d;
        const int64_t kv = hh / group;
        p.assign(static_cast<size_t>(i - start + 1), 0.0);
        double m = -INFINITY;
        for (int64_t j = start; j <= i; ++j) {
          p[static_cast<size_t>(j - start)] = scale * dot(qi, pk + (j * kvh + kv) * d, d);
          m = std::max(m, p[static_cast<size_t>(j - start)]);
        }
        double l = 0;
        for (double& x : p) l += (x = std::exp(x - m));
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = start; j <= i; ++j) {
          const T* vj = pv + (j * kvh + kv) * d;
          for (int64_t e = 0; e < d; ++e) acc[static_cast<size_t>(e)] += p[static_cast<size_t>(j - start)] * vj[e];
        }
        for (int64_t e = 0; e < d; ++e) po[(i * h + hh) * d + e] = static_cast<T>(acc[static_cast<size_t>(e)] / l);
        pl[i * h + hh] = static_cast<T>(m + std::log(l));
      }
    }
  });
}

void reference_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const std::vector<int64_t>& o, float scale, Tensor& dq, Tensor& dk,
                        Tensor& dv) {
  using T = double;
  const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), kvh = k.dim(1), group = h / kvh;
  const T *pq = ptr<T>(q), *pk = ptr<T>(k), *pv = ptr<T>(v), *po = ptr<T>(out), *pl = ptr<T>(lse),
          *pdo = ptr<T>(dout);
  std::vector<double> gq(static_cast<size_t>(n * h * d), 0.0), gk(static_cast<size_t>(n * kvh * d), 0.0),
      gv(static_cast<size_t>(n * kvh * d), 0.0);
  // One part per (sequence, KV head): its keys' gradients and its queries' take contributions
  // in the serial order (queries up, then the group's heads), so the bits are the serial ones.
  const int64_t seqs_n = static_cast<int64_t>(o.size()) - 1;
  parallel_for(seqs_n * kvh, 1, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const size_t s = static_cast<size_t>(item / kvh);
      const int64_t kv = item % kvh;
      for (int64_t i = o[s]; i < o[s + 1]; ++i) {
        for (int64_t hh = kv * group; hh < (kv + 1) * group; ++hh) {
          const int64_t qi = (i * h + hh) * d;
          const double di = dot(pdo + qi, po + qi, d);
          for (int64_t j = o[s]; j <= i; ++j) {
            const int64_t kj = (j * kvh + kv) * d;
            const double pij = std::exp(scale * dot(pq + qi, pk + kj, d) - static_cast<double>(pl[i * h + hh]));
            const double dp = dot(pdo + qi, pv + kj, d);
            const double ds = pij * (dp - di);
            for (int64_t e = 0; e < d; ++e) {
              gv[static_cast<size_t>(kj + e)] += pij * pdo[qi + e];
              gq[static_cast<size_t>(qi + e)] += scale * ds * pk[kj + e];
              gk[static_cast<size_t>(kj + e)] += scale * ds * pq[qi + e];
            }
          }
        }
      }
    }
  });
  for (size_t e = 0; e < gq.size(); ++e) ptr<T>(dq)[e] = static_cast<T>(gq[e]);
  for (size_t e = 0; e < gk.size(); ++e) {
    ptr<T>(dk)[e] = static_cast<T>(gk[e]);
    ptr<T>(dv)[e] = static_cast<T>(gv[e]);
  }
}

void reference_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const int32_t* pl, float scale,
                      Tensor& out) {
  using T = double;
  const int64_t b = q.dim(0), tq = q.dim(1), h = q.dim(2), d = q.dim(3), tmax = k_cache.dim(1), kvh = k_cache.dim(2),
                group = h / kvh;
  // Every (sequence, query, head) is independent; an item reads up to tmax keys and values, so
  // parts hold enough items to be worth a thread (a short decode runs inline).
  const T *pq = ptr<T>(q), *pk = ptr<T>(k_cache), *pv = ptr<T>(v_cache);
  T* po = ptr<T>(out);
  parallel_for(b * tq * h, cpu_kernels::row_grain(2 * tmax * d), [&](int64_t, int64_t begin, int64_t end) {
    std::vector<double> p, acc(static_cast<size_t>(d));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bb = item / (tq * h), j = item / h % tq, hh = item % h;
      const int64_t pos = pl[bb] - tq + j;
      const T* qi = pq + ((bb * tq + j) * h + hh) * d;
      const int64_t kv = hh / group;
      p.assign(static_cast<size_t>(pos + 1), 0.0);
      double m = -INFINITY;
      for (int64_t c = 0; c <= pos; ++c) {
        p[static_cast<size_t>(c)] = scale * dot(qi, pk + ((bb * tmax + c) * kvh + kv) * d, d);
        m = std::max(m, p[static_cast<size_t>(c)]);
      }
      double l = 0;
      for (double& x : p) l += (x = std::exp(x - m));
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t c = 0; c <= pos; ++c) {
        const T* vc = pv + ((bb * tmax + c) * kvh + kv) * d;
        for (int64_t e = 0; e < d; ++e) acc[static_cast<size_t>(e)] += p[static_cast<size_t>(c)] * vc[e];
      }
      for (int64_t e = 0; e < d; ++e)
        po[((bb * tq + j) * h + hh) * d + e] = static_cast<T>(acc[static_cast<size_t>(e)] / l);
    }
  });
}

}  // namespace

void attention_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSeqs& seqs, float scale,
                           Tensor& out, Tensor& lse) {
  const std::vector<int64_t> o = offsets(seqs, q.dim(0), "attention_forward");
  const cpu_kernels::AttentionDims dims{q.dim(1), k.dim(1), q.dim(2)};
  if (q.dtype() == DType::f32)
    return cpu_kernels::attention_forward_tiled(dims, ptr<float>(q), ptr<float>(k), ptr<float>(v), o.data(),
                                                static_cast<int64_t>(o.size()) - 1, scale, ptr<float>(out),
                                                ptr<float>(lse));
  reference_forward(q, k, v, o, scale, out, lse);
}

void attention_backward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                            const Tensor& dout, const AttentionSeqs& seqs, float scale, Tensor& dq, Tensor& dk,
                            Tensor& dv) {
  const std::vector<int64_t> o = offsets(seqs, q.dim(0), "attention_backward");
  if (q.dtype() == DType::f32) {
    const cpu_kernels::AttentionGrads g{ptr<float>(q),   ptr<float>(k),    ptr<float>(v),
                                        ptr<float>(out), ptr<float>(lse),  ptr<float>(dout),
                                        ptr<float>(dq),  ptr<float>(dk),   ptr<float>(dv)};
    return cpu_kernels::attention_backward_tiled({q.dim(1), k.dim(1), q.dim(2)}, g, o.data(),
                                                 static_cast<int64_t>(o.size()) - 1, scale);
  }
  reference_backward(q, k, v, out, lse, dout, o, scale, dq, dk, dv);
}

void attention_decode_cpu(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& lens,
                          float scale, Tensor& out) {
  const int64_t b = q.dim(0), tq = q.dim(1), tmax = k_cache.dim(1);
  const int32_t* pl = ptr<const int32_t>(lens);
  for (int64_t bb = 0; bb < b; ++bb)
    ONN_CHECK_ARG(pl[bb] >= tq && pl[bb] <= tmax, "attention_decode: lens[", bb, "] = ", pl[bb], " is outside [Tq = ", tq,
                  ", Tmax = ", tmax, "]");
  if (q.dtype() == DType::f32)
    return cpu_kernels::attention_decode_tiled({q.dim(2), k_cache.dim(2), q.dim(3)}, ptr<float>(q), k_cache.data(),
                                               v_cache.data(), k_cache.dtype() == DType::bf16, pl, b, tq, tmax, scale,
                                               ptr<float>(out));
  reference_decode(q, k_cache, v_cache, pl, scale, out);
}

}  // namespace onn
