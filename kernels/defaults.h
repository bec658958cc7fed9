// Defaults shared across layers, named once: the LM head's work units (kernels, the model's
// passes, the planner's memory terms) and the device memory a budget leaves free.
#pragma once

#include <cstddef>
#include <cstdint>

namespace onn {

// Tokens per LM-head projection: the fused and the sliced heads hold a (chunk, V) or (chunk,
// granule) logits buffer, never (N, V).
inline constexpr int64_t kLmHeadChunkTokens = 1024;
// Vocabulary rows per granule of the sliced LM head: the unit of its online log-sum-exp, so its
// bits do not depend on where the streamed head's slices are cut.
inline constexpr int64_t kLmHeadGranule = 8192;
// What the default device budget leaves of the free memory: other processes, the CUDA
// context, cuBLAS workspaces.
inline constexpr uint64_t kDeviceMemoryMargin = uint64_t{256} << 20;

}  // namespace onn
