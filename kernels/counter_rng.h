// A counter-based random number: the same (seed, index) gives the same value on the CPU and
// in a CUDA kernel, so a dropout mask is never stored: backward and the other backend
// regenerate it.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ONN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define ONN_HOST_DEVICE inline
#endif

namespace onn {

// splitmix64's finalizer over seed and index: a bijective mix, good enough for masks.
ONN_HOST_DEVICE uint64_t counter_hash(uint64_t seed, uint64_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + index + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 bits, exactly representable in float.
ONN_HOST_DEVICE float counter_uniform(uint64_t seed, uint64_t index) {
  return static_cast<float>(counter_hash(seed, index) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace onn
