// Loop bodies the compiler vectorises without -ffast-math: sums and maxima over fixed lanes
// (one accumulator per lane, combined in lane order, so the bits are fixed by the code, not by
// the vector width), and an exp built from IEEE operations only (no libm call in the loop).
//
// ONN_CPU_CLONES marks a hot CPU kernel for function multi-versioning on x86-64 with GCC: the
// loader picks the AVX-512, AVX2 + FMA or baseline copy once for the machine, so a portable
// binary still runs wide vectors. A clone is fixed per machine, so results do not move with the
// thread count; they may differ between machines in the last bits (FMA contraction).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ONN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define ONN_CPU_CLONES
#endif

namespace onn::cpu_kernels {

inline constexpr int kLanes = 16;

// exp(x) for finite x within a few ulp; 0 below the float range. Range reduction x = n ln2 + r,
// |r| <= ln2 / 2, then a degree-7 Taylor polynomial (error below 1 ulp there), times 2^n.
inline float exp_approx(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860682030941723e-6f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float xc = x > 88.0f ? 88.0f : x;
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t ti, scale;
  std::memcpy(&ti, &t, sizeof ti);
  const int32_t e = ti - 0x4B400000 + 127;  // n + bias
  scale = (e < 1 ? 1 : e) << 23;
  float s;
  std::memcpy(&s, &scale, sizeof s);
  return x < -87.0f ? 0.0f : p * s;
}

// sum of term(i) over i in [0, n): element i goes to partial sum i % kLanes, the partials are
// combined in lane order. Acc: the partials' type (double for sums that must not lose bits).
template <typename Acc = float, typename F>
inline Acc lane_sum_of(int64_t n, F&& term) {
  Acc part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += term(i + l);
  for (; i < n; ++i) part[i % kLanes] += term(i);
  Acc s = 0;
  for (int l = 0; l < kLanes; ++l) s += part[l];
  return s;
}

inline float lane_sum(const float* x, int64_t n) {
  return lane_sum_of(n, [x](int64_t i) { return x[i]; });
}

inline float lane_max(const float* x, int64_t n) {
  float part[kLanes];
  for (float& p : part) p = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] = x[i + l] > part[l] ? x[i + l] : part[l];
  for (; i < n; ++i) part[i % kLanes] = x[i] > part[i % kLanes] ? x[i] : part[i % kLanes];
  float m = -INFINITY;
  for (float p : part) m = p > m ? p : m;
  return m;
}

inline float lane_dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  return lane_sum_of(n, [a, b](int64_t i) { return a[i] * b[i]; });
}

}  // namespace onn::cpu_kernels
