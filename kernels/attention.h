// Causal attention with grouped KV heads (query head h reads KV head h / (H / KVH)) over
// variable-length packed sequences: cu_seqlens (S + 1) holds the token offset of each
// sequence, and no token attends across a boundary. Token-major layout throughout:
// q (N, H, D), k and v (N, KVH, D), out (N, H, D). The forward saves the log-sum-exp of each
// score row, lse (N, H), for the backward. CUDA kernels are flash-style tiles that never form
// the T x T score matrix; the CPU reference is the plain formula.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

struct AttentionSeqs {
  Tensor cu_seqlens;       // (S + 1) I32 on the op's device: 0 = o_0 <= o_1 <= ... <= o_S = N
  int64_t max_seqlen = 0;  // max over s of o_{s+1} - o_s (sizes the CUDA grid)
};
// Host helper: B sequences of T tokens each, on ctx's device.
AttentionSeqs uniform_seqs(Context& ctx, int64_t batch, int64_t seq_len);
// Host helper: from sequence lengths.
AttentionSeqs packed_seqs(Context& ctx, const std::vector<int64_t>& lengths);

// scale: usually 1 / sqrt(D). Head dims 16, 32, 64, 80, 96 and 128 on CUDA; any on the CPU.
void attention_forward(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSeqs& seqs,
                       float scale, Tensor& out, Tensor& lse);
// dout (N, H, D) -> dq (N, H, D), dk and dv (N, KVH, D), all written. out and lse from the
// forward.
void attention_backward(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, const AttentionSeqs& seqs, float scale, Tensor& dq,
                        Tensor& dk, Tensor& dv);

// Decoding: q (B, Tq, H, D) holds the newest Tq tokens of each sequence; k_cache and v_cache
// (B, Tmax, KVH, D) hold every token so far, the new ones included; lens (B) I32 is that
// count per sequence (Tq <= lens[b] <= Tmax). Query j of sequence b sits at position
// lens[b] - Tq + j and attends to cache positions 0 .. that position. out (B, Tq, H, D). The
// cache has q's dtype, or on the CPU may be BF16 under an F32 q (widened as it is read).
void attention_decode(Context& ctx, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& lens, float scale, Tensor& out);

// Caps the shared memory per block the CUDA attention kernels may use (0: the device's own
// limit). Kernels pick smaller tiles (or leave the tensor-core backward) to fit: GPUs such as
// sm_86 / sm_89 allow 99 KiB against Hopper's 227 KiB. Tests use it to run those variants.
void attention_cuda_limit_shared_memory(size_t bytes);

}  // namespace onn
