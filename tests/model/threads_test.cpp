// The CPU worker pool (runtime/parallel.h): every index once, errors rethrown, nested calls
// inline; and the thread count changes no bit: the threaded kernels (RMSNorm forward and
// backward with its weight gradient, SwiGLU, RoPE, attention forward / backward / decode,
// cross-entropy, AdamW, dequantization), the
// quantizer, and a LoRA training step on a quantized base give the same bytes with 1, 2 and 3
// threads.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/quant.h"
#include "kernels/reference.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
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
  std::vector<Tensor> all = {y, r, dx, dw, s, q, att, lse, dq, dk, dv, dec, logits, token_loss, param, m1, m2, deq};
  for (const Tensor& p : nf4.parts()) all.push_back(p);
  return bytes_of(all);
}

// One LoRA step's loss and gradients on a tiny model with an nf4 base, at the current count.
std::vector<uint8_t> lora_step(const std::string& dir) {
  Context ctx(Device::cpu());
  LlamaModel model = LlamaModel::load(ctx, dir, DType::f32, QuantFormat::nf4);
  LoraSpec spec;
  spec.rank = 4;
  spec.dropout = 0.1;
  LoraAdapter ad = make_lora_adapter(ctx, model, spec, 3);
  std::mt19937 rng(8);
  for (LoraModule& m : ad.modules) m.b.copy_from(random64(m.b.shape(), rng, 0.05).to_dtype(m.b.dtype()));
  ad.sync_compute_copies(ctx);
  Gradients grads = make_gradients(ctx, model, &ad);
  const TrainBatch batch = packed_train_batch(ctx, model.config().vocab_size, {40, 25, 63}, 3, rng);
  PassOptions opt;
  opt.lora = &ad;
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

TEST_CASE("the thread count changes no bit: row-parallel kernels, the quantizer, a QLoRA step") {
  TempDir tmp;
  InitOptions io;
  io.seed = 2;
  io.dtype = DType::f32;
  write_random_model(find_preset("tiny"), tmp.path().string(), io);
  std::vector<uint8_t> kernels, step;
  for (int n : kThreadCounts) {
    CAPTURE(n);
    const Threads t(n);
    const std::vector<uint8_t> k = kernel_outputs(), s = lora_step(tmp.path().string());
    if (kernels.empty()) {
      kernels = k;
      step = s;
      continue;
    }
    CHECK(k == kernels);
    CHECK(s == step);
  }
}
