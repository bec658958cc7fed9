// The CPU worker pool (runtime/parallel.h): every index once, errors rethrown, nested calls
// inline; and the thread count changes no bit: the threaded kernels (RMSNorm forward and
// backward with its weight gradient, SwiGLU, RoPE, attention forward / backward / decode,
// cross-entropy, AdamW, dequantization, GEMMs split into tiles, embedding, elementwise ops,
// argmax), the quantizer, a LoRA step on a quantized base and a full training step give the
// same bytes with 1, 2 and 3 threads.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernels/reference.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "kernels/swiglu.h"
#include "model/init.h"
#include "model/lora.h"
#include "model/training.h"
#include "runtime/parallel.h"
#include "support/grad_check.h"
#include "support/test_util.h"
#include "support/train_batch.h"

using namespace onn;
using namespace onn::test;

namespace {

constexpr int kThreadCounts[] = {1, 2, 3};

// Restores the default thread count when a test ends.
struct Threads {
  explicit Threads(int n) { set_cpu_threads(n); }
  ~Threads() { set_cpu_threads(0); }
};

std::vector<uint8_t> bytes_of(const std::vector<Tensor>& ts) {
  std::vector<uint8_t> out;
  for (const Tensor& t : ts) {
    const auto* p = static_cast<const uint8_t*>(t.data());
    out.insert(out.end(), p, p + t.nbytes());
  }
  return out;
}

// The kernels' outputs at the current thread count.
std::vector<uint8_t> kernel_outputs() {
  Context ctx(Device::cpu());
  std::mt19937 rng(5);
  const int64_t n = 300, c = 96, f = 160, heads = 4, d = 24;
  const Tensor x = random_tensor(Shape{n, c}, rng), w = random_tensor(Shape{c}, rng), dy = random_tensor(Shape{n, c}, rng);
  Tensor y = Tensor::empty(Shape{n, c}, DType::f32), r = Tensor::empty(Shape{n}, DType::f32);
  rmsnorm_forward(ctx, x, w, 1e-5f, y, r);
  Tensor dx = Tensor::empty(Shape{n, c}, DType::f32), dw = Tensor::empty(Shape{c}, DType::f32);
  rmsnorm_backward(ctx, x, w, r, dy, dx, &dw);
  const Tensor g = random_tensor(Shape{n, f}, rng), u = random_tensor(Shape{n, f}, rng);
  Tensor s = Tensor::empty(Shape{n, f}, DType::f32);
  swiglu_forward(ctx, g, u, s);
  Tensor q = random_tensor(Shape{n, heads, d}, rng);
  RopeConfig rc;
  rc.head_dim = d;
  rope_forward(ctx, q, sequence_positions(3, 100), rope_inv_freq_tensor(ctx, rc));
  const QuantTensor nf4 = quantize(random_tensor(Shape{700, 130}, rng), QuantFormat::nf4, true, cpu_allocator());
  // Attention over three packed sequences, GQA (4 heads on 2): forward, backward, decode.
  const int64_t kvh = 2;
  const Tensor k = random_tensor(Shape{n, kvh, d}, rng), v = random_tensor(Shape{n, kvh, d}, rng),
               g_out = random_tensor(Shape{n, heads, d}, rng);
  const AttentionSeqs seqs = packed_seqs(ctx, {90, 110, 100});
  Tensor att = Tensor::empty(Shape{n, heads, d}, DType::f32), lse = Tensor::empty(Shape{n, heads}, DType::f32);
  attention_forward(ctx, q, k, v, seqs, 0.2f, att, lse);
  Tensor dq = Tensor::empty(q.shape(), DType::f32), dk = Tensor::empty(k.shape(), DType::f32),
         dv = Tensor::empty(v.shape(), DType::f32);
  attention_backward(ctx, q, k, v, att, lse, g_out, seqs, 0.2f, dq, dk, dv);
  const Tensor qd = random_tensor(Shape{3, 1, heads, d}, rng), kc = random_tensor(Shape{3, 50, kvh, d}, rng),
               vc = random_tensor(Shape{3, 50, kvh, d}, rng);
  Tensor dec = Tensor::empty(qd.shape(), DType::f32);
  attention_decode(ctx, qd, kc, vc, i32_tensor({50, 17, 33}), 0.2f, dec);
  // Cross-entropy with its gradient in place (some labels ignored), AdamW over 50k values.
  Tensor logits = random_tensor(Shape{n, 500}, rng), labels = Tensor::empty(Shape{n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) labels.data_as<int32_t>()[i] = i % 7 == 0 ? -100 : static_cast<int32_t>(i * 13 % 500);
  Tensor valid = Tensor::empty(Shape{1}, DType::f32), token_loss = Tensor::empty(Shape{n}, DType::f32);
  count_valid_labels(ctx, labels, -100, valid);
  CrossEntropyOptions ce;
  ce.compute_grad = true;
  cross_entropy_forward_backward(ctx, logits, labels, valid, token_loss, ce);
  Tensor param = random_tensor(Shape{50000}, rng), m1 = random_tensor(Shape{50000}, rng), grad = random_tensor(Shape{50000}, rng);
  Tensor m2 = Tensor::zeros(Shape{50000}, DType::f32);
  AdamWConfig ac;
  ac.step = 3;
  adamw_step(ctx, param, grad, m1, m2, ac);
  Tensor deq = Tensor::empty(Shape{700, 130}, DType::f32);
  dequantize(ctx, nf4, deq);
  // GEMMs large enough to be split into tiles of C: plain with bias and beta, A^T B and A B^T.
  const Tensor a = random_tensor(Shape{300, 200}, rng), b = random_tensor(Shape{200, 170}, rng),
               bias = random_tensor(Shape{170}, rng), bt = random_tensor(Shape{170, 200}, rng);
  Tensor mm = random_tensor(Shape{300, 170}, rng), ata = Tensor::empty(Shape{200, 200}, DType::f32),
         abt = Tensor::empty(Shape{300, 170}, DType::f32);
  matmul(ctx, a, b, mm, MatmulOptions{.beta = 0.5f, .bias = &bias});
  matmul(ctx, a, a, ata, MatmulOptions{.trans_a = true});
  matmul(ctx, a, bt, abt, MatmulOptions{.trans_b = true});
  // Embedding lookup and its scatter-add (repeated ids), the elementwise ops, argmax over a long row.
  std::vector<int32_t> id_values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) id_values[static_cast<size_t>(i)] = static_cast<int32_t>(i * 7 % 90);
  const Tensor ids = i32_tensor(id_values), table = random_tensor(Shape{90, c}, rng);
  Tensor emb = Tensor::empty(Shape{n, c}, DType::f32), demb = Tensor::zeros(Shape{90, c}, DType::f32);
  embedding_forward(ctx, table, ids, emb);
  embedding_backward(ctx, ids, dy, demb);
  Tensor sum = Tensor::empty(Shape{n, c}, DType::f32), drop = Tensor::empty(Shape{n, c}, DType::f32),
         half = Tensor::empty(Shape{n, c}, DType::bf16);
  add(ctx, x, dy, sum);
  dropout(ctx, x, 0.3f, 17, drop);
  cast(ctx, x, half);
  const Tensor wide = random_tensor(Shape{2, 70000}, rng);
  Tensor best = Tensor::empty(Shape{2}, DType::i32);
  argmax_rows(ctx, wide, best);
  std::vector<Tensor> all = {y,     r,   dx,  dw,  s,   q,    att,  lse,  dq,   dk,   dv,   dec, logits, token_loss,
                             param, m1,  m2,  deq, mm,  ata,  abt,  emb,  demb, sum,  drop, half, best};
  for (const Tensor& p : nf4.parts()) all.push_back(p);
  return bytes_of(all);
}

// One step's loss and gradients on a tiny model at the current count: LoRA on an nf4 base, or
// full training of the dense f32 model (sequences longer than an attention key block).
std::vector<uint8_t> train_step(const std::string& dir, bool lora) {
  Context ctx(Device::cpu());
  LlamaModel model = LlamaModel::load(ctx, dir, DType::f32, lora ? QuantFormat::nf4 : QuantFormat::none);
  std::mt19937 rng(8);
  std::optional<LoraAdapter> ad;
  if (lora) {
    LoraSpec spec;
    spec.rank = 4;
    spec.dropout = 0.1;
    ad = make_lora_adapter(ctx, model, spec, 3);
    for (LoraModule& m : ad->modules) m.b.copy_from(random64(m.b.shape(), rng, 0.05).to_dtype(m.b.dtype()));
    ad->sync_compute_copies(ctx);
  }
  Gradients grads = make_gradients(ctx, model, ad ? &*ad : nullptr);
  const TrainBatch batch =
      packed_train_batch(ctx, model.config().vocab_size, lora ? std::vector<int64_t>{40, 25, 63} : std::vector<int64_t>{130, 77}, 3, rng);
  PassOptions opt;
  opt.lora = ad ? &*ad : nullptr;
  opt.dropout_seed = 11;
  const double loss = forward_backward(ctx, model, batch, grads, opt);
  std::vector<uint8_t> out = bytes_of(gradient_tensors(grads));
  const auto* lb = reinterpret_cast<const uint8_t*>(&loss);
  out.insert(out.end(), lb, lb + sizeof loss);
  return out;
}

}  // namespace

TEST_CASE("parallel_for runs every index once, rethrows a part's error, and runs nested calls inline") {
  const Threads t(3);
  CHECK(cpu_threads() == 3);
  std::vector<std::atomic<int>> hits(1000);
  parallel_for(1000, 7, [&](int64_t part, int64_t begin, int64_t end) {
    CHECK(begin == part * 7);
    for (int64_t i = begin; i < end; ++i) {
      hits[static_cast<size_t>(i)]++;
      if (i == begin) parallel_for(5, 1, [&](int64_t, int64_t, int64_t) {});  // nested: inline
    }
  });
  for (const auto& h : hits) CHECK(h.load() == 1);
  CHECK(parallel_parts(1000, 7) == 143);
  CHECK_THROWS_AS(parallel_for(50, 1, [](int64_t p, int64_t, int64_t) {
                    if (p == 17) throw std::runtime_error("part 17");
                  }),
                  std::runtime_error);
  int64_t after = 0;  // the pool still works after an error
  parallel_for(10, 1, [&](int64_t, int64_t, int64_t) { (void)after; });
}

TEST_CASE("the thread count changes no bit: the threaded kernels, the quantizer, a QLoRA step, a full step") {
  TempDir tmp;
  InitOptions io;
  io.seed = 2;
  io.dtype = DType::f32;
  write_random_model(find_preset("tiny"), tmp.path().string(), io);
  std::vector<uint8_t> kernels, qlora, full;
  for (int n : kThreadCounts) {
    CAPTURE(n);
    const Threads t(n);
    const std::vector<uint8_t> k = kernel_outputs(), q = train_step(tmp.path().string(), true),
                               f = train_step(tmp.path().string(), false);
    if (kernels.empty()) {
      kernels = k;
      qlora = q;
      full = f;
      continue;
    }
    CHECK(k == kernels);
    CHECK(q == qlora);
    CHECK(f == full);
  }
}
