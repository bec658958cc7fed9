// The backends' entry points, private to kernels/ (not installed): each op's checked front
// (kernels/X.cpp) dispatches to X_cpu (kernels/cpu/X.cpp) or X_cuda (kernels/cuda/X.cu). A new
// op adds its pair here.
#pragma once

#include <vector>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "kernels/swiglu.h"

namespace onn {

// matmul
MatmulShape matmul_check(const Tensor& a, const Tensor& b, const Tensor& c, const MatmulOptions& opt);
void matmul_cpu(const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt);
void matmul_cuda(Context& ctx, const MatmulShape& s, const Tensor& a, const Tensor& b, Tensor& c,
                 const MatmulOptions& opt);

// elementwise
void cast_cpu(const Tensor& src, Tensor& dst);
void add_cpu(const Tensor& a, const Tensor& b, Tensor& out);
void scale_cpu(Tensor& x, float s);
void fill_cpu(Tensor& x, float value);
void dropout_cpu(const Tensor& x, float p, uint64_t seed, Tensor& out);
void cast_cuda(Context& ctx, const Tensor& src, Tensor& dst);
void add_cuda(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);
void scale_cuda(Context& ctx, Tensor& x, float s);
void fill_cuda(Context& ctx, Tensor& x, float value);
void dropout_cuda(Context& ctx, const Tensor& x, float p, uint64_t seed, Tensor& out);

// embedding
void embedding_forward_cpu(const Tensor& weight, const Tensor& ids, Tensor& out);
void embedding_backward_cpu(const Tensor& ids, const Tensor& dout, Tensor& dweight);
void embedding_forward_cuda(Context& ctx, const Tensor& weight, const Tensor& ids, Tensor& out);
void embedding_backward_cuda(Context& ctx, const Tensor& ids, const Tensor& dout, Tensor& dweight);

// rmsnorm
// y = rmsnorm(x), or with `add`: sum = x + add (rounded to the dtype), y = rmsnorm(sum). sum may
// be x itself (the residual stream updated in place).
void rmsnorm_forward_cpu(const Tensor& x, const Tensor* add, Tensor* sum, const Tensor& weight, float eps, Tensor& y,
                         Tensor& rstd);
void rmsnorm_backward_cpu(const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                          Tensor* dweight, bool accumulate_dx);
void rmsnorm_forward_cuda(Context& ctx, const Tensor& x, const Tensor* add, Tensor* sum, const Tensor& weight,
                          float eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward_cuda(Context& ctx, const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dy,
                           Tensor& dx, Tensor* dweight, bool accumulate_dx);

// rope
void rope_cpu(Tensor& x, const Tensor& positions, const Tensor& inv_freq, bool inverse);
void rope_cuda(Context& ctx, Tensor& x, const Tensor& positions, const Tensor& inv_freq, bool inverse);

// attention
void attention_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSeqs& seqs, float scale,
                           Tensor& out, Tensor& lse);
void attention_backward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                            const Tensor& dout, const AttentionSeqs& seqs, float scale, Tensor& dq, Tensor& dk,
                            Tensor& dv);
void attention_decode_cpu(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& lens,
                          float scale, Tensor& out);
void attention_forward_cuda(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                            const AttentionSeqs& seqs, float scale, Tensor& out, Tensor& lse);
void attention_backward_cuda(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                             const Tensor& lse, const Tensor& dout, const AttentionSeqs& seqs, float scale,
                             Tensor& dq, Tensor& dk, Tensor& dv);
void attention_decode_cuda(Context& ctx, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const Tensor& lens, float scale, Tensor& out);

// swiglu
// Strided form both layouts reduce to: row i of gate starts at gate + i * ld_in (likewise up,
// dgate, dup with ld_din); out and dout are dense (N, F).
struct SwigluArgs {
  const void* gate;
  const void* up;
  int64_t ld_in;
  void* out;         // forward
  const void* dout;  // backward
  void* dgate;
  void* dup;
  int64_t ld_din;
  int64_t n, f;
  DType dtype;
};
void swiglu_cpu(const SwigluArgs& a, bool backward);
void swiglu_cuda(Context& ctx, const SwigluArgs& a, bool backward);

// cross_entropy
void count_valid_labels_cpu(const Tensor& labels, int32_t ignore_index, Tensor& valid);
void cross_entropy_cpu(Tensor& logits, const Tensor& labels, const Tensor& valid, Tensor& token_loss,
                       const CrossEntropyOptions& opt);
void mean_loss_cpu(const Tensor& token_loss, const Tensor& valid, Tensor& loss);
void vocab_chunk_stats_cpu(const Tensor& logits, const Tensor& labels, int64_t v0, Tensor& m, Tensor& l,
                           Tensor& target, int32_t ignore_index);
void vocab_chunk_grad_cpu(Tensor& logits, const Tensor& labels, int64_t v0, const Tensor& m, const Tensor& l,
                          const Tensor& valid, int32_t ignore_index);
void vocab_chunk_loss_cpu(const Tensor& labels, const Tensor& m, const Tensor& l, const Tensor& target,
                          Tensor& token_loss, int32_t ignore_index);
void vocab_chunk_stats_cuda(Context& ctx, const Tensor& logits, const Tensor& labels, int64_t v0, Tensor& m,
                            Tensor& l, Tensor& target, int32_t ignore_index);
void vocab_chunk_grad_cuda(Context& ctx, Tensor& logits, const Tensor& labels, int64_t v0, const Tensor& m,
                           const Tensor& l, const Tensor& valid, int32_t ignore_index);
void vocab_chunk_loss_cuda(Context& ctx, const Tensor& labels, const Tensor& m, const Tensor& l,
                           const Tensor& target, Tensor& token_loss, int32_t ignore_index);
void count_valid_labels_cuda(Context& ctx, const Tensor& labels, int32_t ignore_index, Tensor& valid);
void cross_entropy_cuda(Context& ctx, Tensor& logits, const Tensor& labels, const Tensor& valid, Tensor& token_loss,
                        const CrossEntropyOptions& opt);
void mean_loss_cuda(Context& ctx, const Tensor& token_loss, const Tensor& valid, Tensor& loss);

// adamw
void adamw_cpu(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg, Tensor* param_copy);
double sum_squares_cpu(const Tensor& t);
void adamw_cuda(Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                Tensor* param_copy);
double global_sum_squares_cuda(Context& ctx, const std::vector<const Tensor*>& grads);

// sampling
void argmax_rows_cpu(const Tensor& logits, Tensor& out);
void argmax_rows_cuda(Context& ctx, const Tensor& logits, Tensor& out);

// quant
void dequantize_cpu(const QuantTensor& q, Tensor& out);
void quant_linear_cpu(const Tensor& x, const QuantTensor& q, const Tensor* bias, Tensor& y);
void dequantize_cuda(Context& ctx, const QuantTensor& q, Tensor& out);

}  // namespace onn
