// Tensor-core (WMMA, bf16 in, fp32 accumulate) flash-attention kernels for BF16: the
// forward, and the backward's dK/dV and dQ kernels. Included by attention.cu only, which
// launches them; the scalar F32 / decode kernels and the launchers live there.
#pragma once

#include <mma.h>

#include "kernels/cuda/common.cuh"

namespace onn::cuda_kernels {

// Tensor-core forward for BF16. Per block: 64 queries (warp w owns rows 16w..16w+15) of one
// head against 64-key tiles. Shared memory (bf16 tiles padded by 8 elements so every WMMA
// pointer stays 32-byte aligned): Q, K, V (64, D + 8); per warp P (16, 72) and an fp32 scratch
// (16, max(68, D + 4)) that holds S, then P V. Lane l owns row l / 2 and half (l % 2) of its
// columns, for the softmax and for the running output.
constexpr int kWmmaRows = 64;
constexpr int kWmmaCols = 64;
constexpr int kWmmaWarps = kWmmaRows / 16;

template <int D>
struct WmmaLayout {
  static constexpr int LD = D + 8;                       // bf16 tiles
  static constexpr int LDP = kWmmaCols + 8;              // P
  static constexpr int LDS = kWmmaCols + 4;              // S (fp32)
  static constexpr int LDO = D + 4;                      // P V (fp32)
  static constexpr int SCR = LDS > LDO ? LDS : LDO;      // per-warp scratch row
  static constexpr size_t tile_bytes = sizeof(bf16) * kWmmaRows * LD;
  static constexpr size_t p_bytes = sizeof(bf16) * kWmmaWarps * 16 * LDP;
  static constexpr size_t scratch_bytes = sizeof(float) * kWmmaWarps * 16 * SCR;
  static constexpr size_t bytes = 3 * tile_bytes + p_bytes + scratch_bytes;
};

// rows x D bf16 from a token-major tensor into a padded tile with 16-byte copies; rows past
// `valid` are zeros.
template <int D>
__device__ __forceinline__ void load_tile_bf16(bf16* tile, const bf16* base, int64_t row0, int rows, int64_t valid,
                                               int64_t heads, int64_t head) {
  constexpr int V = D / 8;  // uint4 per row
  for (int idx = threadIdx.x; idx < rows * V; idx += blockDim.x) {
    const int r = idx / V, c = idx % V;
    const int64_t row = row0 + r;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (row < valid) val = *reinterpret_cast<const uint4*>(base + (row * heads + head) * D + c * 8);
    *reinterpret_cast<uint4*>(tile + r * WmmaLayout<D>::LD + c * 8) = val;
  }
}

template <int D>
__global__ void __launch_bounds__(32 * kWmmaWarps) attention_forward_wmma_kernel(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
    const int32_t* __restrict__ cu, bf16* __restrict__ out, float* __restrict__ lse, int64_t h, int64_t kvh,
    float scale) {
  using namespace nvcuda;
  using L = WmmaLayout<D>;
  constexpr int KD = D / 16, HALF = D / 2;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* ks = qs + kWmmaRows * L::LD;
  bf16* vs = ks + kWmmaRows * L::LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  bf16* ps = vs + kWmmaRows * L::LD + warp * 16 * L::LDP;
  float* scr = reinterpret_cast<float*>(smem_raw + 3 * L::tile_bytes + L::p_bytes) + warp * 16 * L::SCR;

  const int64_t start = cu[blockIdx.z], len = cu[blockIdx.z + 1] - start;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kWmmaRows;
  if (q0 >= len) return;
  const int64_t head = blockIdx.y, kv_head = head / (h / kvh);
  const int r = lane / 2, hf = lane % 2;
  const int64_t qpos = q0 + warp * 16 + r;

  load_tile_bf16<D>(qs, q + start * h * D, q0, kWmmaRows, len, h, head);
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> qf[KD];
#pragma unroll
  for (int kk = 0; kk < KD; ++kk) wmma::load_matrix_sync(qf[kk], qs + warp * 16 * L::LD + kk * 16, L::LD);

  float o[HALF];
#pragma unroll
  for (int i = 0; i < HALF; ++i) o[i] = 0.0f;
  float m = -INFINITY, lsum = 0.0f;
  const int64_t kv_end = min(len, q0 + kWmmaRows);
  for (int64_t k0 = 0; k0 < kv_end; k0 += kWmmaCols) {
    __syncthreads();  // every warp is done with the previous K and V tiles
    load_tile_bf16<D>(ks, k + start * kvh * D, k0, kWmmaCols, len, kvh, kv_head);
    load_tile_bf16<D>(vs, v + start * kvh * D, k0, kWmmaCols, len, kvh, kv_head);
    __syncthreads();
    // S (16 x 64) = Q_w K^T: K row-major (keys, D) is K^T column-major.
#pragma unroll
    for (int j = 0; j < kWmmaCols / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf;
      wmma::fill_fragment(sf, 0.0f);
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, ks + j * 16 * L::LD + kk * 16, L::LD);
        wmma::mma_sync(sf, qf[kk], kf, sf);
      }
      wmma::store_matrix_sync(scr + j * 16, sf, L::LDS, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax over this lane's 32 scores of row r.
    float s[kWmmaCols / 2];
    float tile_max = -INFINITY;
#pragma unroll
    for (int c = 0; c < kWmmaCols / 2; ++c) {
      const int col = hf * (kWmmaCols / 2) + c;
      const int64_t kpos = k0 + col;
      s[c] = (kpos <= qpos && kpos < len) ? scr[r * L::LDS + col] * scale : -INFINITY;
      tile_max = fmaxf(tile_max, s[c]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = m == -INFINITY ? 0.0f : __expf(m - m_use);
    float row_sum = 0.0f;
#pragma unroll
    for (int c = 0; c < kWmmaCols / 2; ++c) {
      const float p = __expf(s[c] - m_use);
      row_sum += p;
      ps[r * L::LDP + hf * (kWmmaCols / 2) + c] = __float2bfloat16_rn(p);
    }
    row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);
    lsum = lsum * alpha + row_sum;
    m = m_new;
    __syncwarp();  // P is complete and S is no longer read: the scratch takes P V
#pragma unroll
    for (int jd = 0; jd < KD; ++jd) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
      wmma::fill_fragment(of, 0.0f);
#pragma unroll
      for (int kk = 0; kk < kWmmaCols / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, ps + kk * 16, L::LDP);
        wmma::load_matrix_sync(vf, vs + kk * 16 * L::LD + jd * 16, L::LD);
        wmma::mma_sync(of, pf, vf, of);
      }
      wmma::store_matrix_sync(scr + jd * 16, of, L::LDO, wmma::mem_row_major);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < HALF; ++i) o[i] = o[i] * alpha + scr[r * L::LDO + hf * HALF + i];
    __syncwarp();  // the scratch is read before the next tile's S overwrites it
  }
  if (qpos >= len) return;
  const float inv = 1.0f / lsum;
  bf16* orow = out + ((start + qpos) * h + head) * D + hf * HALF;
#pragma unroll
  for (int i = 0; i < HALF; ++i) orow[i] = __float2bfloat16_rn(o[i] * inv);
  if (hf == 0) lse[(start + qpos) * h + head] = m + logf(lsum);
}

// Tensor-core backward for BF16, in the same 64-row tiles and lane ownership as the forward.
// dK/dV: the block's 64 keys (warp w: keys 16w..) loop over the query heads of their group and
// the query tiles at or below the diagonal; S^T and dP^T are computed on tensor cores and
// staged in fp32, P^T and dS^T go back to bf16 for the dV += P^T dO and dK += dS^T Q products,
// whose accumulators stay in fragments for the whole loop. dQ: the block's 64 queries loop over
// key tiles the same way. No atomics: each output row has one owning warp.
template <int D>
struct WmmaBwdLayout {
  static constexpr int LD = D + 8, LDP = kWmmaCols + 8, LDS = kWmmaCols + 4, LDO = D + 4;
  static constexpr int SCR = LDS > LDO ? LDS : LDO;
  static constexpr size_t tile_bytes = sizeof(bf16) * kWmmaRows * LD;
  static constexpr size_t p_bytes = sizeof(bf16) * kWmmaWarps * 2 * 16 * LDP;  // two bf16 (16, LDP) per warp
  static constexpr size_t scratch_bytes = sizeof(float) * kWmmaWarps * 2 * 16 * SCR;
  static constexpr size_t vec_bytes = sizeof(float) * 2 * kWmmaRows;  // lse and delta of a query tile
  static constexpr size_t bytes = 4 * tile_bytes + p_bytes + scratch_bytes + vec_bytes;
};

// out1 = A1 B1^T and out2 = A2 B2^T, (16, 64) each, into fp32 scratch rows of stride LDS:
// A is 16 rows of a padded (rows, D) bf16 tile, B 64 rows of another, read column-major (as
// its transpose). The backward's S and dP products, or their transposes.
template <int D>
__device__ __forceinline__ void two_score_products(const bf16* a1, const bf16* b1, const bf16* a2, const bf16* b2,
                                                   float* out1, float* out2) {
  using namespace nvcuda;
  using L = WmmaBwdLayout<D>;
#pragma unroll
  for (int j = 0; j < kWmmaCols / 16; ++j) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> f1, f2;
    wmma::fill_fragment(f1, 0.0f);
    wmma::fill_fragment(f2, 0.0f);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> af;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> bf;
      wmma::load_matrix_sync(af, a1 + kk * 16, L::LD);
      wmma::load_matrix_sync(bf, b1 + j * 16 * L::LD + kk * 16, L::LD);
      wmma::mma_sync(f1, af, bf, f1);
      wmma::load_matrix_sync(af, a2 + kk * 16, L::LD);
      wmma::load_matrix_sync(bf, b2 + j * 16 * L::LD + kk * 16, L::LD);
      wmma::mma_sync(f2, af, bf, f2);
    }
    wmma::store_matrix_sync(out1 + j * 16, f1, L::LDS, wmma::mem_row_major);
    wmma::store_matrix_sync(out2 + j * 16, f2, L::LDS, wmma::mem_row_major);
  }
}

template <int D>
__global__ void __launch_bounds__(32 * kWmmaWarps) attention_dkdv_wmma_kernel(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
    const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
    const int32_t* __restrict__ cu, bf16* __restrict__ dk, bf16* __restrict__ dv, int64_t h, int64_t kvh,
    float scale) {
  using namespace nvcuda;
  using L = WmmaBwdLayout<D>;
  constexpr int KD = D / 16, HALF = D / 2, QH = kWmmaRows / 2;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* vs = ks + kWmmaRows * L::LD;
  bf16* qs = vs + kWmmaRows * L::LD;
  bf16* dos = qs + kWmmaRows * L::LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  bf16* pt = dos + kWmmaRows * L::LD + warp * 2 * 16 * L::LDP;  // P^T (16, 64)
  bf16* dst = pt + 16 * L::LDP;                                   // dS^T (16, 64)
  float* scr_s = reinterpret_cast<float*>(smem_raw + 4 * L::tile_bytes + L::p_bytes) + warp * 2 * 16 * L::SCR;
  float* scr_p = scr_s + 16 * L::SCR;
  float* lse_s = reinterpret_cast<float*>(smem_raw + 4 * L::tile_bytes + L::p_bytes + L::scratch_bytes);
  float* delta_s = lse_s + kWmmaRows;

  const int64_t start = cu[blockIdx.z], len = cu[blockIdx.z + 1] - start;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kWmmaRows;
  if (k0 >= len) return;
  const int64_t kv_head = blockIdx.y, group = h / kvh;
  const int r = lane / 2, hf = lane % 2;
  const int64_t kpos = k0 + warp * 16 + r;
  load_tile_bf16<D>(ks, k + start * kvh * D, k0, kWmmaRows, len, kvh, kv_head);
  load_tile_bf16<D>(vs, v + start * kvh * D, k0, kWmmaRows, len, kvh, kv_head);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> dkf[KD], dvf[KD];
#pragma unroll
  for (int jd = 0; jd < KD; ++jd) {
    wmma::fill_fragment(dkf[jd], 0.0f);
    wmma::fill_fragment(dvf[jd], 0.0f);
  }
  for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    for (int64_t q0 = k0; q0 < len; q0 += kWmmaRows) {
      __syncthreads();  // the previous query tile is no longer read
      load_tile_bf16<D>(qs, q + start * h * D, q0, kWmmaRows, len, h, head);
      load_tile_bf16<D>(dos, dout + start * h * D, q0, kWmmaRows, len, h, head);
      for (int i = threadIdx.x; i < kWmmaRows; i += blockDim.x) {
        const bool ok = q0 + i < len;
        lse_s[i] = ok ? lse[(start + q0 + i) * h + head] : 0.0f;
        delta_s[i] = ok ? delta[(start + q0 + i) * h + head] : 0.0f;
      }
      __syncthreads();
      // S^T = K_w Q^T and dP^T = V_w dO^T.
      two_score_products<D>(ks + warp * 16 * L::LD, qs, vs + warp * 16 * L::LD, dos, scr_s, scr_p);
      __syncwarp();
#pragma unroll 8
      for (int c = 0; c < QH; ++c) {
        const int col = hf * QH + c;
        const int64_t qpos = q0 + col;
        const bool live = kpos <= qpos && qpos < len && kpos < len;
        const float p = live ? __expf(scr_s[r * L::LDS + col] * scale - lse_s[col]) : 0.0f;
        pt[r * L::LDP + col] = __float2bfloat16_rn(p);
        dst[r * L::LDP + col] = __float2bfloat16_rn(p * (scr_p[r * L::LDS + col] - delta_s[col]));
      }
      __syncwarp();
      // dV_w += P^T dO, dK_w += dS^T Q: (16, 64) x (64, D).
#pragma unroll
      for (int kk = 0; kk < kWmmaRows / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pa, sa;
        wmma::load_matrix_sync(pa, pt + kk * 16, L::LDP);
        wmma::load_matrix_sync(sa, dst + kk * 16, L::LDP);
#pragma unroll
        for (int jd = 0; jd < KD; ++jd) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bf;
          wmma::load_matrix_sync(bf, dos + kk * 16 * L::LD + jd * 16, L::LD);
          wmma::mma_sync(dvf[jd], pa, bf, dvf[jd]);
          wmma::load_matrix_sync(bf, qs + kk * 16 * L::LD + jd * 16, L::LD);
          wmma::mma_sync(dkf[jd], sa, bf, dkf[jd]);
        }
      }
    }
  }
  __syncwarp();
#pragma unroll
  for (int jd = 0; jd < KD; ++jd) {
    wmma::store_matrix_sync(scr_s + jd * 16, dkf[jd], L::LDO, wmma::mem_row_major);
    wmma::store_matrix_sync(scr_p + jd * 16, dvf[jd], L::LDO, wmma::mem_row_major);
  }
  __syncwarp();
  if (kpos >= len) return;
  bf16* dkr = dk + ((start + kpos) * kvh + kv_head) * D + hf * HALF;
  bf16* dvr = dv + ((start + kpos) * kvh + kv_head) * D + hf * HALF;
#pragma unroll
  for (int i = 0; i < HALF; ++i) {
    dkr[i] = __float2bfloat16_rn(scr_s[r * L::LDO + hf * HALF + i] * scale);
    dvr[i] = __float2bfloat16_rn(scr_p[r * L::LDO + hf * HALF + i]);
  }
}

template <int D>
__global__ void __launch_bounds__(32 * kWmmaWarps) attention_dq_wmma_kernel(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
    const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
    const int32_t* __restrict__ cu, bf16* __restrict__ dq, int64_t h, int64_t kvh, float scale) {
  using namespace nvcuda;
  using L = WmmaBwdLayout<D>;
  constexpr int KD = D / 16, HALF = D / 2, KH = kWmmaCols / 2;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* dos = qs + kWmmaRows * L::LD;
  bf16* ks = dos + kWmmaRows * L::LD;
  bf16* vs = ks + kWmmaRows * L::LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  bf16* dss = vs + kWmmaRows * L::LD + warp * 2 * 16 * L::LDP;  // dS (16, 64)
  float* scr_s = reinterpret_cast<float*>(smem_raw + 4 * L::tile_bytes + L::p_bytes) + warp * 2 * 16 * L::SCR;
  float* scr_p = scr_s + 16 * L::SCR;

  const int64_t start = cu[blockIdx.z], len = cu[blockIdx.z + 1] - start;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kWmmaRows;
  if (q0 >= len) return;
  const int64_t head = blockIdx.y, kv_head = head / (h / kvh);
  const int r = lane / 2, hf = lane % 2;
  const int64_t qpos = q0 + warp * 16 + r;
  const bool row_ok = qpos < len;
  const float row_lse = row_ok ? lse[(start + qpos) * h + head] : 0.0f;
  const float row_delta = row_ok ? delta[(start + qpos) * h + head] : 0.0f;
  load_tile_bf16<D>(qs, q + start * h * D, q0, kWmmaRows, len, h, head);
  load_tile_bf16<D>(dos, dout + start * h * D, q0, kWmmaRows, len, h, head);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> dqf[KD];
#pragma unroll
  for (int jd = 0; jd < KD; ++jd) wmma::fill_fragment(dqf[jd], 0.0f);
  const int64_t kv_end = min(len, q0 + kWmmaRows);
  for (int64_t k0 = 0; k0 < kv_end; k0 += kWmmaCols) {
    __syncthreads();
    load_tile_bf16<D>(ks, k + start * kvh * D, k0, kWmmaCols, len, kvh, kv_head);
    load_tile_bf16<D>(vs, v + start * kvh * D, k0, kWmmaCols, len, kvh, kv_head);
    __syncthreads();
    // S = Q_w K^T and dP = dO_w V^T.
    two_score_products<D>(qs + warp * 16 * L::LD, ks, dos + warp * 16 * L::LD, vs, scr_s, scr_p);
    __syncwarp();
#pragma unroll 8
    for (int c = 0; c < KH; ++c) {
      const int col = hf * KH + c;
      const int64_t kpos = k0 + col;
      const bool live = row_ok && kpos <= qpos && kpos < len;
      const float p = live ? __expf(scr_s[r * L::LDS + col] * scale - row_lse) : 0.0f;
      dss[r * L::LDP + col] = __float2bfloat16_rn(p * (scr_p[r * L::LDS + col] - row_delta));
    }
    __syncwarp();
    // dQ_w += dS K: (16, 64) x (64, D).
#pragma unroll
    for (int kk = 0; kk < kWmmaCols / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> sa;
      wmma::load_matrix_sync(sa, dss + kk * 16, L::LDP);
#pragma unroll
      for (int jd = 0; jd < KD; ++jd) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bf;
        wmma::load_matrix_sync(bf, ks + kk * 16 * L::LD + jd * 16, L::LD);
        wmma::mma_sync(dqf[jd], sa, bf, dqf[jd]);
      }
    }
  }
  __syncwarp();
#pragma unroll
  for (int jd = 0; jd < KD; ++jd) wmma::store_matrix_sync(scr_s + jd * 16, dqf[jd], L::LDO, wmma::mem_row_major);
  __syncwarp();
  if (!row_ok) return;
  bf16* dqr = dq + ((start + qpos) * h + head) * D + hf * HALF;
#pragma unroll
  for (int i = 0; i < HALF; ++i) dqr[i] = __float2bfloat16_rn(scr_s[r * L::LDO + hf * HALF + i] * scale);
}

}  // namespace onn::cuda_kernels
