// Attention on CUDA, flash-style (the scalar F32 kernels use the accurate expf so F32 keeps
// its 1e-5 parity; the BF16 tensor-core kernels use __expf): scores live only in registers and a small shared tile, never
// as a T x T matrix. Tiles are staged in shared memory as fp32 (bf16 data is widened on load),
// four threads share a score row and each owns D/4 output columns.
//   forward:   block = 32 queries of one head; loops over 64-key tiles up to the diagonal with
//              an online softmax; writes out and lse = m + log(l). BF16 takes a tensor-core
//              version (WMMA 16x16x16, fp32 accumulation): four warps of 16 queries each,
//              S = Q K^T and P V on tensor cores, the softmax on the fp32 scores in shared
//              memory, the output rows in registers.
//   backward:  three kernels and no atomics, so gradients are bitwise reproducible:
//              delta = rowsum(dout * out); dk/dv per key tile (looping over the query heads
//              of its KV group and the query tiles at or below the diagonal); dq per query
//              tile (looping over key tiles). BF16 again takes WMMA versions (64-row tiles).
//   decode:    split-KV: each block takes 256 cache positions of one (sequence, query, head),
//              one warp per key; a second kernel merges the splits in order.
#include <algorithm>
#include <atomic>

#include "kernels/attention.h"
#include "kernels/backends.h"
#include "kernels/cuda/attention_wmma.cuh"
#include "kernels/cuda/common.cuh"

namespace onn {

using namespace cuda_kernels;

namespace {

constexpr int kFwdRows = 32;   // queries per forward block
constexpr int kFwdCols = 64;   // keys per forward tile
constexpr int kBwdKeys = 32;   // keys per dk/dv block (queries per tile: 64, or 32 on GPUs with
constexpr int kDqRows = 32;    // queries per dq block  less shared memory; likewise dq's keys)
constexpr int kAttnThreads = 128;
constexpr int kDecodeSplit = 256;
constexpr int kDecodeWarps = 4;

// Copies rows [row0, row0 + rows) of one head from a token-major (N, heads, D) tensor into a
// padded fp32 tile (stride ld); rows past `valid` become zeros.
template <typename T, int D>
__device__ __forceinline__ void load_tile(float* tile, int ld, const T* base, int64_t row0, int rows, int64_t valid,
                                          int64_t heads, int64_t head) {
  for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const int r = idx / D, c = idx % D;
    const int64_t row = row0 + r;
    tile[r * ld + c] = row < valid ? to_f(base[(row * heads + head) * D + c]) : 0.0f;
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads) attention_forward_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const int32_t* __restrict__ cu,
    T* __restrict__ out, float* __restrict__ lse, int64_t h, int64_t kvh, float scale) {
  constexpr int LD = D + 1, PLD = kFwdCols + 1, CPT = D / 4;
  extern __shared__ float smem[];
  float* qs = smem;                   // (32, D + 1)
  float* ks = qs + kFwdRows * LD;     // (64, D + 1)
  float* vs = ks + kFwdCols * LD;     // (64, D + 1)
  float* ps = vs + kFwdCols * LD;     // (32, 65)
  const int64_t start = cu[blockIdx.z], len = cu[blockIdx.z + 1] - start;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kFwdRows;
  if (q0 >= len) return;
  const int64_t head = blockIdx.y, kv_head = head / (h / kvh);
  const int r = threadIdx.x / 4, l = threadIdx.x % 4;
  const int64_t qpos = q0 + r;
  load_tile<T, D>(qs, LD, q + start * h * D, q0, kFwdRows, len, h, head);
  float o[CPT];
#pragma unroll
  for (int i = 0; i < CPT; ++i) o[i] = 0.0f;
  float m = -INFINITY, lsum = 0.0f;
  const int64_t kv_end = min(len, q0 + kFwdRows);
  for (int64_t k0 = 0; k0 < kv_end; k0 += kFwdCols) {
    __syncthreads();  // the previous tile is no longer read
    load_tile<T, D>(ks, LD, k + start * kvh * D, k0, kFwdCols, len, kvh, kv_head);
    load_tile<T, D>(vs, LD, v + start * kvh * D, k0, kFwdCols, len, kvh, kv_head);
    __syncthreads();
    float s[kFwdCols / 4];
#pragma unroll
    for (int j = 0; j < kFwdCols / 4; ++j) s[j] = 0.0f;
    for (int d = 0; d < D; ++d) {
      const float qd = qs[r * LD + d];
#pragma unroll
      for (int j = 0; j < kFwdCols / 4; ++j) s[j] += qd * ks[(l + 4 * j) * LD + d];
    }
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kFwdCols / 4; ++j) {
      const int64_t kpos = k0 + l + 4 * j;
      s[j] = (kpos <= qpos && kpos < len) ? s[j] * scale : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    const float m_new = fmaxf(m, tile_max);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = m == -INFINITY ? 0.0f : expf(m - m_use);
    float row_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kFwdCols / 4; ++j) {
      const float p = expf(s[j] - m_use);  // exp(-inf) = 0 for masked keys
      row_sum += p;
      ps[r * PLD + l + 4 * j] = p;
    }
    row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);
    row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 2);
    lsum = lsum * alpha + row_sum;
    m = m_new;
    __syncwarp();  // the row's four threads see each other's probabilities
#pragma unroll
    for (int i = 0; i < CPT; ++i) o[i] *= alpha;
    for (int c = 0; c < kFwdCols; ++c) {
      const float p = ps[r * PLD + c];
#pragma unroll
      for (int i = 0; i < CPT; ++i) o[i] += p * vs[c * LD + l + 4 * i];
    }
  }
  if (qpos >= len) return;
  const float inv = 1.0f / lsum;
  T* orow = out + ((start + qpos) * h + head) * D;
#pragma unroll
  for (int i = 0; i < CPT; ++i) orow[l + 4 * i] = from_f<T>(o[i] * inv);
  if (l == 0) lse[(start + qpos) * h + head] = m + logf(lsum);
}

// delta (N, H) = rowsum(dout * out): one warp per (token, head).
template <typename T, int D>
__global__ void attention_delta_kernel(const T* __restrict__ out, const T* __restrict__ dout,
                                       float* __restrict__ delta, int64_t rows) {
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += warps) {
    float s = 0.0f;
    for (int d = threadIdx.x % 32; d < D; d += 32) s += to_f(out[row * D + d]) * to_f(dout[row * D + d]);
    s = warp_sum(s);
    if (threadIdx.x % 32 == 0) delta[row] = s;
  }
}

template <typename T, int D, int QR>
__global__ void __launch_bounds__(kAttnThreads) attention_dkdv_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
    const float* __restrict__ lse, const float* __restrict__ delta, const int32_t* __restrict__ cu,
    T* __restrict__ dk, T* __restrict__ dv, int64_t h, int64_t kvh, float scale) {
  constexpr int LD = D + 1, PLD = QR + 1, CPT = D / 4;
  extern __shared__ float smem[];
  float* ks = smem;                  // (32, D + 1)
  float* vs = ks + kBwdKeys * LD;    // (32, D + 1)
  float* qs = vs + kBwdKeys * LD;    // (QR, D + 1)
  float* dos = qs + QR * LD;   // (QR, D + 1)
  float* pt = dos + QR * LD;   // (32, QR + 1): P^T
  float* dst = pt + kBwdKeys * PLD;  // (32, QR + 1): dS^T
  float* ls = dst + kBwdKeys * PLD;  // (QR)
  float* ds = ls + QR;         // (QR)
  const int64_t start = cu[blockIdx.z], len = cu[blockIdx.z + 1] - start;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kBwdKeys;
  if (k0 >= len) return;
  const int64_t kv_head = blockIdx.y, group = h / kvh;
  const int c = threadIdx.x / 4, l = threadIdx.x % 4;
  const int64_t kpos = k0 + c;
  load_tile<T, D>(ks, LD, k + start * kvh * D, k0, kBwdKeys, len, kvh, kv_head);
  load_tile<T, D>(vs, LD, v + start * kvh * D, k0, kBwdKeys, len, kvh, kv_head);
  float gk[CPT], gv[CPT];
#pragma unroll
  for (int i = 0; i < CPT; ++i) gk[i] = gv[i] = 0.0f;
  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    for (int64_t q0 = (k0 / QR) * QR; q0 < len; q0 += QR) {
      __syncthreads();
      load_tile<T, D>(qs, LD, q + start * h * D, q0, QR, len, h, head);
      load_tile<T, D>(dos, LD, dout + start * h * D, q0, QR, len, h, head);
      for (int i = threadIdx.x; i < QR; i += blockDim.x) {
        const bool ok = q0 + i < len;
        ls[i] = ok ? lse[(start + q0 + i) * h + head] : 0.0f;
        ds[i] = ok ? delta[(start + q0 + i) * h + head] : 0.0f;
      }
      __syncthreads();
      float s[QR / 4], dp[QR / 4];
#pragma unroll
      for (int j = 0; j < QR / 4; ++j) s[j] = dp[j] = 0.0f;
      for (int d = 0; d < D; ++d) {
        const float kd = ks[c * LD + d], vd = vs[c * LD + d];
#pragma unroll
        for (int j = 0; j < QR / 4; ++j) {
          s[j] += qs[(l + 4 * j) * LD + d] * kd;
          dp[j] += dos[(l + 4 * j) * LD + d] * vd;
        }
      }
#pragma unroll
      for (int j = 0; j < QR / 4; ++j) {
        const int rr = l + 4 * j;
        const int64_t qpos = q0 + rr;
        const bool live = kpos <= qpos && qpos < len && kpos < len;
        const float p = live ? expf(s[j] * scale - ls[rr]) : 0.0f;
        pt[c * PLD + rr] = p;
        dst[c * PLD + rr] = p * (dp[j] - ds[rr]);
      }
      __syncwarp();
      for (int rr = 0; rr < QR; ++rr) {
        const float p = pt[c * PLD + rr], g = dst[c * PLD + rr];
#pragma unroll
        for (int i = 0; i < CPT; ++i) {
          gv[i] += p * dos[rr * LD + l + 4 * i];
          gk[i] += g * qs[rr * LD + l + 4 * i];
        }
      }
    }
  }
  if (kpos >= len) return;
  T* dkr = dk + ((start + kpos) * kvh + kv_head) * D;
  T* dvr = dv + ((start + kpos) * kvh + kv_head) * D;
#pragma unroll
  for (int i = 0; i < CPT; ++i) {
    dkr[l + 4 * i] = from_f<T>(gk[i] * scale);
    dvr[l + 4 * i] = from_f<T>(gv[i]);
  }
}

template <typename T, int D, int KC>
__global__ void __launch_bounds__(kAttnThreads) attention_dq_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
    const float* __restrict__ lse, const float* __restrict__ delta, const int32_t* __restrict__ cu,
    T* __restrict__ dq, int64_t h, int64_t kvh, float scale) {
  constexpr int LD = D + 1, SLD = KC + 1, CPT = D / 4;
  extern __shared__ float smem[];
  float* qs = smem;                  // (32, D + 1)
  float* dos = qs + kDqRows * LD;    // (32, D + 1)
  float* ks = dos + kDqRows * LD;    // (KC, D + 1)
  float* vs = ks + KC * LD;     // (KC, D + 1)
  float* dss = vs + KC * LD;    // (32, KC + 1)
  const int64_t start = cu[blockIdx.z], len = cu[blockIdx.z + 1] - start;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kDqRows;
  if (q0 >= len) return;
  const int64_t head = blockIdx.y, kv_head = head / (h / kvh);
  const int r = threadIdx.x / 4, l = threadIdx.x % 4;
  const int64_t qpos = q0 + r;
  const bool row_ok = qpos < len;
  const float row_lse = row_ok ? lse[(start + qpos) * h + head] : 0.0f;
  const float row_delta = row_ok ? delta[(start + qpos) * h + head] : 0.0f;
  load_tile<T, D>(qs, LD, q + start * h * D, q0, kDqRows, len, h, head);
  load_tile<T, D>(dos, LD, dout + start * h * D, q0, kDqRows, len, h, head);
  float g[CPT];
#pragma unroll
  for (int i = 0; i < CPT; ++i) g[i] = 0.0f;
  const int64_t kv_end = min(len, q0 + kDqRows);
  for (int64_t k0 = 0; k0 < kv_end; k0 += KC) {
    __syncthreads();
    load_tile<T, D>(ks, LD, k + start * kvh * D, k0, KC, len, kvh, kv_head);
    load_tile<T, D>(vs, LD, v + start * kvh * D, k0, KC, len, kvh, kv_head);
    __syncthreads();
    float s[KC / 4], dp[KC / 4];
#pragma unroll
    for (int j = 0; j < KC / 4; ++j) s[j] = dp[j] = 0.0f;
    for (int d = 0; d < D; ++d) {
      const float qd = qs[r * LD + d], gd = dos[r * LD + d];
#pragma unroll
      for (int j = 0; j < KC / 4; ++j) {
        s[j] += qd * ks[(l + 4 * j) * LD + d];
        dp[j] += gd * vs[(l + 4 * j) * LD + d];
      }
    }
#pragma unroll
    for (int j = 0; j < KC / 4; ++j) {
      const int64_t kpos = k0 + l + 4 * j;
      const bool live = row_ok && kpos <= qpos && kpos < len;
      const float p = live ? expf(s[j] * scale - row_lse) : 0.0f;
      dss[r * SLD + l + 4 * j] = p * (dp[j] - row_delta);
    }
    __syncwarp();
    for (int cc = 0; cc < KC; ++cc) {
      const float gs = dss[r * SLD + cc];
#pragma unroll
      for (int i = 0; i < CPT; ++i) g[i] += gs * ks[cc * LD + l + 4 * i];
    }
  }
  if (!row_ok) return;
  T* dqr = dq + ((start + qpos) * h + head) * D;
#pragma unroll
  for (int i = 0; i < CPT; ++i) dqr[l + 4 * i] = from_f<T>(g[i] * scale);
}

// One block per (split, query j * H + head, sequence b): a running softmax over at most
// kDecodeSplit cache positions, one warp per key, merged across warps in order.
template <typename T, int D>
__global__ void attention_decode_kernel(const T* __restrict__ q, const T* __restrict__ kc, const T* __restrict__ vc,
                                        const int32_t* __restrict__ lens, float* __restrict__ part_o,
                                        float* __restrict__ part_ml, int64_t tq, int64_t h, int64_t tmax,
                                        int64_t kvh, int64_t splits, float scale) {
  constexpr int PER_LANE = (D + 31) / 32;
  __shared__ float wm[kDecodeWarps], wl[kDecodeWarps], wo[kDecodeWarps][D];
  const int64_t b = blockIdx.z, j = blockIdx.y / h, head = blockIdx.y % h, sp = blockIdx.x;
  const int64_t kv_head = head / (h / kvh);
  const int64_t pos = static_cast<int64_t>(lens[b]) - tq + j;  // attends to 0..pos
  const int64_t c0 = sp * kDecodeSplit, c1 = min(pos + 1, c0 + kDecodeSplit);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const T* qrow = q + ((b * tq + j) * h + head) * D;
  float qv[PER_LANE], acc[PER_LANE];
#pragma unroll
  for (int e = 0; e < PER_LANE; ++e) {
    const int d = lane + 32 * e;
    qv[e] = d < D ? to_f(qrow[d]) * scale : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -INFINITY, lsum = 0.0f;
  for (int64_t c = c0 + warp; c < c1; c += kDecodeWarps) {
    const T* krow = kc + ((b * tmax + c) * kvh + kv_head) * D;
    const T* vrow = vc + ((b * tmax + c) * kvh + kv_head) * D;
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) {
      const int d = lane + 32 * e;
      if (d < D) s += qv[e] * to_f(krow[d]);
    }
    s = warp_sum(s);
    const float m_new = fmaxf(m, s);
    const float alpha = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float p = expf(s - m_new);
    lsum = lsum * alpha + p;
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) {
      const int d = lane + 32 * e;
      acc[e] = acc[e] * alpha + (d < D ? p * to_f(vrow[d]) : 0.0f);
    }
    m = m_new;
  }
  if (lane == 0) {
    wm[warp] = m;
    wl[warp] = lsum;
  }
#pragma unroll
  for (int e = 0; e < PER_LANE; ++e) {
    const int d = lane + 32 * e;
    if (d < D) wo[warp][d] = acc[e];
  }
  __syncthreads();
  const int64_t slot = (b * tq * h + blockIdx.y) * splits + sp;
  if (threadIdx.x < D) {
    float mm = -INFINITY;
    for (int w = 0; w < kDecodeWarps; ++w) mm = fmaxf(mm, wm[w]);
    float o = 0.0f, ll = 0.0f;
    for (int w = 0; w < kDecodeWarps; ++w) {
      const float f = wm[w] == -INFINITY ? 0.0f : expf(wm[w] - mm);
      o += wo[w][threadIdx.x] * f;
      ll += wl[w] * f;
    }
    part_o[slot * D + threadIdx.x] = o;
    if (threadIdx.x == 0) {
      part_ml[2 * slot] = mm;
      part_ml[2 * slot + 1] = ll;
    }
  }
}

template <typename T, int D>
__global__ void attention_decode_merge_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                              T* __restrict__ out, int64_t splits) {
  const int64_t row = blockIdx.x;  // (b * Tq + j) * H + head
  const float* ml = part_ml + 2 * row * splits;
  float mm = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) mm = fmaxf(mm, ml[2 * s]);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.0f, ll = 0.0f;
    for (int64_t s = 0; s < splits; ++s) {
      if (ml[2 * s] == -INFINITY) continue;
      const float f = expf(ml[2 * s] - mm);
      o += part_o[(row * splits + s) * D + d] * f;
      ll += ml[2 * s + 1] * f;
    }
    out[row * D + d] = from_f<T>(o / ll);
  }
}

template <typename F>
void dispatch_head_dim(int64_t d, F&& f) {
  switch (d) {
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 80: f(std::integral_constant<int, 80>{}); break;
    case 96: f(std::integral_constant<int, 96>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default: throw InvalidArgument("attention on CUDA: head dim " + std::to_string(d) + " is not 16, 32, 64, 80, 96 or 128");
  }
}

std::atomic<size_t> g_smem_cap{0};

// The shared memory one block may use on `dev` (opt-in maximum), capped for tests.
size_t shared_memory_limit(int dev) {
  int optin = 0;
  ONN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const size_t cap = g_smem_cap.load();
  return cap > 0 ? std::min(cap, static_cast<size_t>(optin)) : static_cast<size_t>(optin);
}

constexpr size_t scalar_dkdv_smem(int d, int rows) {
  return sizeof(float) * ((2 * kBwdKeys + 2 * rows) * (d + 1) + 2 * kBwdKeys * (rows + 1) + 2 * rows);
}
constexpr size_t scalar_dq_smem(int d, int cols) {
  return sizeof(float) * ((2 * kDqRows + 2 * cols) * (d + 1) + kDqRows * (cols + 1));
}

void require_smem(size_t smem, size_t limit) {
  ONN_CHECK_ARG(smem <= limit, "attention on CUDA: a kernel needs ", smem, " bytes of shared memory per block; this ",
                "device allows ", limit);
}

template <typename K>
void launch_with_smem(K kernel, dim3 grid, size_t smem, size_t limit, cudaStream_t st, auto... args) {
  require_smem(smem, limit);
  ONN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, kAttnThreads, smem, st>>>(args...);
  ONN_CUDA_CHECK_LAUNCH();
}

dim3 seq_grid(int64_t max_seqlen, int rows, int64_t heads, int64_t seqs) {
  const int64_t tiles = std::max<int64_t>(1, (max_seqlen + rows - 1) / rows);
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(heads), static_cast<unsigned>(seqs));
}

}  // namespace

void attention_cuda_limit_shared_memory(size_t bytes) { g_smem_cap.store(bytes); }

void attention_forward_cuda(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                            const AttentionSeqs& seqs, float scale, Tensor& out, Tensor& lse) {
  const int64_t n = q.dim(0), h = q.dim(1), kvh = k.dim(1), nseq = seqs.cu_seqlens.dim(0) - 1;
  if (n == 0 || seqs.max_seqlen == 0) return;
  dispatch_float(q.dtype(), "attention_forward", [&](auto t) {
    using T = decltype(t);
    dispatch_head_dim(q.dim(2), [&](auto dd) {
      constexpr int D = decltype(dd)::value;
      if constexpr (std::is_same_v<T, bf16>) {
        const auto kernel = attention_forward_wmma_kernel<D>;
        const size_t smem = WmmaLayout<D>::bytes;
        require_smem(smem, shared_memory_limit(ctx.device().index));
        ONN_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
        kernel<<<seq_grid(seqs.max_seqlen, kWmmaRows, h, nseq), 32 * kWmmaWarps, smem, stream_of(ctx)>>>(
            ptr<const bf16>(q), ptr<const bf16>(k), ptr<const bf16>(v), ptr<const int32_t>(seqs.cu_seqlens),
            ptr<bf16>(out), ptr<float>(lse), h, kvh, scale);
        ONN_CUDA_CHECK_LAUNCH();
      } else {
        const size_t smem = sizeof(float) * ((kFwdRows + 2 * kFwdCols) * (D + 1) + kFwdRows * (kFwdCols + 1));
        launch_with_smem(attention_forward_kernel<T, D>, seq_grid(seqs.max_seqlen, kFwdRows, h, nseq), smem,
                         shared_memory_limit(ctx.device().index), stream_of(ctx), ptr<const T>(q), ptr<const T>(k), ptr<const T>(v),
                         ptr<const int32_t>(seqs.cu_seqlens), ptr<T>(out), ptr<float>(lse), h, kvh, scale);
      }
    });
  });
}

void attention_backward_cuda(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                             const Tensor& lse, const Tensor& dout, const AttentionSeqs& seqs, float scale,
                             Tensor& dq, Tensor& dk, Tensor& dv) {
  const int64_t n = q.dim(0), h = q.dim(1), kvh = k.dim(1), nseq = seqs.cu_seqlens.dim(0) - 1;
  if (n == 0) return;
  if (seqs.max_seqlen == 0) return;
  Tensor delta = Tensor::empty(Shape{n, h}, DType::f32, ctx.allocator());
  cudaStream_t st = stream_of(ctx);
  dispatch_float(q.dtype(), "attention_backward", [&](auto t) {
    using T = decltype(t);
    dispatch_head_dim(q.dim(2), [&](auto dd) {
      constexpr int D = decltype(dd)::value;
      attention_delta_kernel<T, D><<<grid_for(n * h * 32), kThreads, 0, st>>>(ptr<const T>(out), ptr<const T>(dout),
                                                                             ptr<float>(delta), n * h);
      ONN_CUDA_CHECK_LAUNCH();
      const size_t limit = shared_memory_limit(ctx.device().index);
      if (std::is_same_v<T, bf16> && WmmaBwdLayout<D>::bytes <= limit) {
        const size_t smem = WmmaBwdLayout<D>::bytes;
        const auto dkdv = attention_dkdv_wmma_kernel<D>;
        const auto dqk = attention_dq_wmma_kernel<D>;
        ONN_CUDA_CHECK(cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
        ONN_CUDA_CHECK(cudaFuncSetAttribute(dqk, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
        dkdv<<<seq_grid(seqs.max_seqlen, kWmmaRows, kvh, nseq), 32 * kWmmaWarps, smem, st>>>(
            ptr<const bf16>(q), ptr<const bf16>(k), ptr<const bf16>(v), ptr<const bf16>(dout), ptr<const float>(lse),
            ptr<const float>(delta), ptr<const int32_t>(seqs.cu_seqlens), ptr<bf16>(dk), ptr<bf16>(dv), h, kvh, scale);
        ONN_CUDA_CHECK_LAUNCH();
        dqk<<<seq_grid(seqs.max_seqlen, kWmmaRows, h, nseq), 32 * kWmmaWarps, smem, st>>>(
            ptr<const bf16>(q), ptr<const bf16>(k), ptr<const bf16>(v), ptr<const bf16>(dout), ptr<const float>(lse),
            ptr<const float>(delta), ptr<const int32_t>(seqs.cu_seqlens), ptr<bf16>(dq), h, kvh, scale);
        ONN_CUDA_CHECK_LAUNCH();
      } else {
        const auto launch = [&](auto rows) {
          constexpr int R = decltype(rows)::value;
          launch_with_smem(attention_dkdv_kernel<T, D, R>, seq_grid(seqs.max_seqlen, kBwdKeys, kvh, nseq),
                           scalar_dkdv_smem(D, R), limit, st, ptr<const T>(q), ptr<const T>(k), ptr<const T>(v),
                           ptr<const T>(dout), ptr<const float>(lse), ptr<const float>(delta),
                           ptr<const int32_t>(seqs.cu_seqlens), ptr<T>(dk), ptr<T>(dv), h, kvh, scale);
          launch_with_smem(attention_dq_kernel<T, D, R>, seq_grid(seqs.max_seqlen, kDqRows, h, nseq),
                           scalar_dq_smem(D, R), limit, st, ptr<const T>(q), ptr<const T>(k), ptr<const T>(v),
                           ptr<const T>(dout), ptr<const float>(lse), ptr<const float>(delta),
                           ptr<const int32_t>(seqs.cu_seqlens), ptr<T>(dq), h, kvh, scale);
        };
        if (std::max(scalar_dkdv_smem(D, 64), scalar_dq_smem(D, 64)) <= limit)
          launch(std::integral_constant<int, 64>{});
        else
          launch(std::integral_constant<int, 32>{});
      }
    });
  });
}

void attention_decode_cuda(Context& ctx, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const Tensor& lens, float scale, Tensor& out) {
  const int64_t b = q.dim(0), tq = q.dim(1), h = q.dim(2), tmax = k_cache.dim(1), kvh = k_cache.dim(2);
  if (b == 0 || tq == 0) return;
  const int64_t splits = (tmax + kDecodeSplit - 1) / kDecodeSplit;
  const int64_t rows = b * tq * h;
  Tensor part_o = Tensor::empty(Shape{rows * splits, q.dim(3)}, DType::f32, ctx.allocator());
  Tensor part_ml = Tensor::empty(Shape{rows * splits, 2}, DType::f32, ctx.allocator());
  cudaStream_t st = stream_of(ctx);
  dispatch_float(q.dtype(), "attention_decode", [&](auto t) {
    using T = decltype(t);
    dispatch_head_dim(q.dim(3), [&](auto dd) {
      constexpr int D = decltype(dd)::value;
      const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(tq * h), static_cast<unsigned>(b));
      attention_decode_kernel<T, D><<<grid, 32 * kDecodeWarps, 0, st>>>(
          ptr<const T>(q), ptr<const T>(k_cache), ptr<const T>(v_cache), ptr<const int32_t>(lens), ptr<float>(part_o),
          ptr<float>(part_ml), tq, h, tmax, kvh, splits, scale);
      ONN_CUDA_CHECK_LAUNCH();
      attention_decode_merge_kernel<T, D><<<static_cast<unsigned>(rows), 128, 0, st>>>(
          ptr<const float>(part_o), ptr<const float>(part_ml), ptr<T>(out), splits);
      ONN_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace onn
