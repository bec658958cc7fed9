// Attention: sequence helpers, argument checks and dispatch.
#include "kernels/attention.h"
#include "kernels/backends.h"

#include <algorithm>

#include "kernels/op_check.h"

namespace onn {

#if !ONN_HAVE_CUDA
void attention_cuda_limit_shared_memory(size_t) {}  // no CUDA kernels to limit
#endif

AttentionSeqs packed_seqs(Context& ctx, const std::vector<int64_t>& lengths) {
  Tensor host = Tensor::empty(Shape{static_cast<int64_t>(lengths.size()) + 1}, DType::i32);
  int32_t* p = static_cast<int32_t*>(host.data());
  int64_t off = 0, mx = 0;
  p[0] = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    ONN_CHECK_ARG(lengths[i] >= 0, "packed_seqs: negative length ", lengths[i]);
    off += lengths[i];
    ONN_CHECK_ARG(off <= INT32_MAX, "packed_seqs: more than 2^31 tokens");
    p[i + 1] = static_cast<int32_t>(off);
    mx = std::max(mx, lengths[i]);
  }
  return {host.to(ctx.device()), mx};
}

AttentionSeqs uniform_seqs(Context& ctx, int64_t batch, int64_t seq_len) {
  return packed_seqs(ctx, std::vector<int64_t>(static_cast<size_t>(batch), seq_len));
}

namespace {
void check_qkv(const OpCheck& chk, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSeqs& seqs) {
  chk.require(q.rank() == 3 && k.rank() == 3, "q must be (N, H, D) and k (N, KVH, D)");
  const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), kvh = k.dim(1);
  chk.require(k.dim(0) == n && k.dim(2) == d, "k must be (", n, ", KVH, ", d, ")");
  chk.require(kvh >= 1 && h % kvh == 0, "H = ", h, " must be a multiple of KVH = ", kvh);
  chk.shape(v, "v", k.shape());
  chk.float_dtype(q, "q");
  chk.same_dtype(q, "q", k, "k");
  chk.same_dtype(q, "q", v, "v");
  if (!chk.cpu()) chk.require(d == 16 || d == 32 || d == 64 || d == 80 || d == 96 || d == 128,
                              "CUDA head dims are 16, 32, 64, 80, 96, 128; got ", d);
  chk.require(seqs.cu_seqlens.defined() && seqs.cu_seqlens.rank() == 1 && seqs.cu_seqlens.dim(0) >= 2 &&
                  seqs.cu_seqlens.dtype() == DType::i32 && seqs.cu_seqlens.device() == chk.device(),
              "cu_seqlens must be (S + 1) I32 on the op's device, got ", describe(seqs.cu_seqlens));
  chk.require(seqs.max_seqlen >= 0 && seqs.max_seqlen <= n, "max_seqlen ", seqs.max_seqlen, " is outside [0, N]");
}
}  // namespace

void attention_forward(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSeqs& seqs,
                       float scale, Tensor& out, Tensor& lse) {
  const OpCheck chk("attention_forward", ctx, {{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"lse", &lse}});
  check_qkv(chk, q, k, v, seqs);
  chk.shape(out, "out", q.shape());
  chk.same_dtype(q, "q", out, "out");
  chk.shape(lse, "lse", Shape{q.dim(0), q.dim(1)});
  chk.dtype(lse, "lse", q.dtype() == DType::f64 ? DType::f64 : DType::f32);
  ONN_DISPATCH(chk, attention_forward_cpu(q, k, v, seqs, scale, out, lse),
               attention_forward_cuda(ctx, q, k, v, seqs, scale, out, lse));
}

void attention_backward(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, const AttentionSeqs& seqs, float scale, Tensor& dq,
                        Tensor& dk, Tensor& dv) {
  const OpCheck chk("attention_backward", ctx,
                    {{"q", &q},
                     {"k", &k},
                     {"v", &v},
                     {"out", &out},
                     {"lse", &lse},
                     {"dout", &dout},
                     {"dq", &dq},
                     {"dk", &dk},
                     {"dv", &dv}});
  check_qkv(chk, q, k, v, seqs);
  for (const auto& [t, name] : {std::pair{&out, "out"}, {&dout, "dout"}, {&dq, "dq"}}) {
    chk.shape(*t, name, q.shape());
    chk.same_dtype(q, "q", *t, name);
  }
  for (const auto& [t, name] : {std::pair{&dk, "dk"}, {&dv, "dv"}}) {
    chk.shape(*t, name, k.shape());
    chk.same_dtype(q, "q", *t, name);
  }
  chk.shape(lse, "lse", Shape{q.dim(0), q.dim(1)});
  chk.dtype(lse, "lse", q.dtype() == DType::f64 ? DType::f64 : DType::f32);
  ONN_DISPATCH(chk, attention_backward_cpu(q, k, v, out, lse, dout, seqs, scale, dq, dk, dv),
               attention_backward_cuda(ctx, q, k, v, out, lse, dout, seqs, scale, dq, dk, dv));
}

void attention_decode(Context& ctx, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& lens, float scale, Tensor& out) {
  const OpCheck chk("attention_decode", ctx,
                    {{"q", &q}, {"k_cache", &k_cache}, {"v_cache", &v_cache}, {"lens", &lens}, {"out", &out}});
  chk.require(q.rank() == 4 && k_cache.rank() == 4, "q must be (B, Tq, H, D) and k_cache (B, Tmax, KVH, D)");
  const int64_t b = q.dim(0), tq = q.dim(1), h = q.dim(2), d = q.dim(3), tmax = k_cache.dim(1), kvh = k_cache.dim(2);
  chk.require(k_cache.dim(0) == b && k_cache.dim(3) == d, "k_cache must be (", b, ", Tmax, KVH, ", d, ")");
  chk.require(kvh >= 1 && h % kvh == 0, "H = ", h, " must be a multiple of KVH = ", kvh);
  chk.require(tq <= tmax, "Tq = ", tq, " exceeds the cache length ", tmax);
  chk.shape(v_cache, "v_cache", k_cache.shape());
  chk.float_dtype(q, "q");
  // The CPU also reads an F32 query against a BF16 cache.
  if (!(chk.cpu() && q.dtype() == DType::f32 && k_cache.dtype() == DType::bf16)) chk.same_dtype(q, "q", k_cache, "k_cache");
  chk.same_dtype(k_cache, "k_cache", v_cache, "v_cache");
  chk.shape(lens, "lens", Shape{b});
  chk.dtype(lens, "lens", DType::i32);
  chk.shape(out, "out", q.shape());
  chk.same_dtype(q, "q", out, "out");
  if (!chk.cpu()) chk.require(d == 16 || d == 32 || d == 64 || d == 80 || d == 96 || d == 128,
                              "CUDA head dims are 16, 32, 64, 80, 96, 128; got ", d);
  ONN_DISPATCH(chk, attention_decode_cpu(q, k_cache, v_cache, lens, scale, out),
               attention_decode_cuda(ctx, q, k_cache, v_cache, lens, scale, out));
}

}  // namespace onn
