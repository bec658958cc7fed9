// The low-VRAM path on the CPU backend with a simulated device: a CachingAllocator over host
// memory with a byte budget stands in for the GPU, the same ChunkStreamer schedule runs
// (synchronously). Streamed LoRA training gives the same bits as resident training (losses,
// gradients, the LoRA weights after AdamW steps) for several chunk sizes and budgets; a
// sparse layer set gives the same gradients as a full-depth backward and streams less; the
// allocator's peak stays under the budget, which is below what the resident run needs.
#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <random>

#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/streaming.h"
#include "model/training.h"
#include "runtime/allocator.h"
#include "runtime/error.h"
#include "support/grad_check.h"
#include "support/train_batch.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {

constexpr int64_t kGranule = 32;  // LM-head granule: the 320-row vocabulary takes several slices

// A 5-layer model (tiny preset, F32 weights) in a temporary folder.
std::string five_layer_model(const TempDir& dir) {
  ModelPreset p = find_preset("tiny");
  p.config.num_hidden_layers = 5;
  InitOptions o;
  o.seed = 11;
  o.dtype = DType::f32;
  write_random_model(p, dir.path().string(), o);
  return dir.path().string();
}

TrainBatch make_batch(Context& ctx, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  return packed_train_batch(ctx, vocab, {9, 5, 12}, 2, rng);
}

struct RunResult {
  std::vector<double> losses;
  std::vector<Tensor> grads;    // the last step's, host copies
  std::vector<Tensor> weights;  // LoRA A and B after the steps
  size_t peak = 0;
  uint64_t streamed_bytes = 0;
  uint64_t copies = 0;
  uint64_t offloaded_bytes = 0;
  int64_t layer_chunks = 0, head_slices = 0;
  std::vector<TraceSpan> trace;  // with `traced`: every step's spans
  uint64_t traced_backend_calls = 0;  // the allocator's backend allocations and frees while traced
};

// Three optimizer steps of two micro-batches each on a context whose allocator has `budget`
// (0: none); streamed with k layers per chunk when k > 0, else resident with the sliced head.
// per_load > 1 (streamed): each per_load consecutive micro-batches share every weight load
// (forward_backward_groups).
RunResult train(const std::string& dir, int64_t k, size_t budget, const std::vector<int64_t>& layers,
                const std::vector<int64_t>& zero_b_layers = {}, int64_t steps = 3, bool offload = false,
                bool traced = false, int64_t on_device = 0, uint32_t per_load = 1, uint32_t micro_batches = 2,
                QuantFormat quantize = QuantFormat::none) {
  CachingAllocator alloc(make_host_raw_backend(), budget);
  Context ctx(Device::cpu(), alloc, 0);
  LlamaModel model = k > 0 ? LlamaModel::load_to_host(ctx, dir, std::nullopt, quantize)
                           : LlamaModel::load(ctx, dir, std::nullopt, quantize);
  LoraSpec spec;
  spec.rank = 4;
  spec.alpha = 8;
  spec.dropout = 0.1;
  spec.layers = layers;
  LoraAdapter ad = make_lora_adapter(ctx, model, spec, 7);
  // A and B from a seed per (layer, module), so a module starts the same whichever other
  // modules exist; B is nonzero so every path carries signal, except on zero_b_layers (an
  // adapter that does not change the forward but makes the backward run down to layer 0).
  for (LoraModule& m : ad.modules) {
    std::mt19937 rng(static_cast<uint32_t>(m.layer * 131 + static_cast<int64_t>(std::hash<std::string>{}(m.name) % 97)));
    bool keep_zero = false;
    for (int64_t z : zero_b_layers) keep_zero = keep_zero || m.layer == z;
    m.a.copy_from(random64(m.a.shape(), rng, 0.1).to_dtype(m.a.dtype()));
    if (!keep_zero) m.b.copy_from(random64(m.b.shape(), rng, 0.05).to_dtype(m.b.dtype()));
  }
  ad.sync_compute_copies(ctx);
  std::optional<StreamedWeights> sw;
  if (k > 0) {
    StreamOptions so;
    so.layers_per_chunk = k;
    so.head_granule = kGranule;
    so.offload_activations = offload;
    so.activation_layers_on_device = on_device;
    sw.emplace(ctx, model, so);
  }
  StreamTrace trace(ctx.device());
  if (traced && sw) sw->streamer().set_trace(&trace);
  Gradients g = make_gradients(ctx, model, &ad);
  std::vector<Tensor> params = gradient_tensors(Gradients{ad, std::nullopt});
  std::vector<Tensor> grads = gradient_tensors(g), ms, vs;
  for (const Tensor& p : params) {
    ms.push_back(Tensor::zeros(p.shape(), p.dtype()));
    vs.push_back(Tensor::zeros(p.shape(), p.dtype()));
  }
  RunResult r;
  const auto backend_calls = [&] { return alloc.stats().backend_allocs + alloc.stats().backend_frees; };
  for (int64_t step = 1; step <= steps; ++step) {
    const uint64_t calls_before = backend_calls();
    if (traced) trace.begin(ctx.compute());
    zero_gradients(ctx, g);
    std::vector<TrainBatch> batches;
    std::vector<PassOptions> opts;
    Tensor losses = Tensor::empty(Shape{micro_batches}, DType::f32, ctx.allocator());
    std::vector<Tensor> loss_outs(micro_batches);
    for (uint32_t micro = 0; micro < micro_batches; ++micro) {
      batches.push_back(make_batch(ctx, model.config().vocab_size, static_cast<uint32_t>(step * 10 + micro)));
      PassOptions opt;
      opt.lora = &ad;
      opt.dropout_seed = static_cast<uint64_t>(step * 100 + micro);
      opt.head_granule = kGranule;
      opt.stream = sw ? &*sw : nullptr;
      opts.push_back(opt);
    }
    if (per_load > 1) {  // groups of per_load micro-batches share each weight load, losses left on the device
      for (uint32_t micro = 0; micro < micro_batches; ++micro) {
        loss_outs[micro] = losses.slice(micro, micro + 1);
        opts[micro].loss_out = &loss_outs[micro];
      }
      forward_backward_groups(ctx, model, batches, g, opts, per_load);
      for (uint32_t micro = 0; micro < micro_batches; ++micro) r.losses.push_back(losses.data_as<float>()[micro]);
    } else {
      for (uint32_t micro = 0; micro < micro_batches; ++micro)
        r.losses.push_back(forward_backward(ctx, model, batches[micro], g, opts[micro]));
    }
    AdamWConfig cfg;
    cfg.lr = 1e-2f;
    cfg.step = step;
    for (size_t i = 0; i < params.size(); ++i) adamw_step(ctx, params[i], grads[i], ms[i], vs[i], cfg);
    ad.sync_compute_copies(ctx);
    if (traced && sw) {
      sw->streamer().stats();  // hands the step's copies and windows to the trace
      const std::vector<TraceSpan> spans = trace.take();
      r.traced_backend_calls += backend_calls() - calls_before;
      r.trace.insert(r.trace.end(), spans.begin(), spans.end());
    }
  }
  for (const Tensor& t : grads) r.grads.push_back(clone(t));
  for (const Tensor& t : params) r.weights.push_back(clone(t));
  r.peak = alloc.stats().peak_reserved;
  if (sw) {
    r.streamed_bytes = sw->streamer().stats().bytes;
    r.copies = sw->streamer().stats().copies;
    r.offloaded_bytes = sw->offloaded_bytes();
    r.layer_chunks = sw->layer_chunks();
    r.head_slices = sw->head_slices();
  }
  return r;
}

bool same_bits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].nbytes() != b[i].nbytes() || std::memcmp(a[i].data(), b[i].data(), a[i].nbytes()) != 0) return false;
  return true;
}

}  // namespace

TEST_CASE("streamed LoRA training has the bits of resident training for every chunk size and budget") {
  TempDir tmp;
  const std::string dir = five_layer_model(tmp);
  const RunResult resident = train(dir, 0, 0, {});
  REQUIRE(resident.losses.size() == 6);
  for (double l : resident.losses) CHECK(std::isfinite(l));
  for (int64_t k : {1, 2, 3, 5}) {
    CAPTURE(k);
    // The streamed run's own peak without a limit, then that peak (tight) and a quarter more
    // as budgets: the same bits every time, the peak within the budget.
    const RunResult free = train(dir, k, 0, {});
    CHECK(free.losses == resident.losses);
    CHECK(same_bits(free.weights, resident.weights));
    if (k == 1) CHECK(free.peak < resident.peak);  // one layer at a time beats all of them resident
    for (double headroom : {1.0, 1.25}) {
      CAPTURE(headroom);
      const size_t budget = static_cast<size_t>(double(free.peak) * headroom);
      const RunResult streamed = train(dir, k, budget, {});
      CHECK(streamed.losses == resident.losses);
      CHECK(same_bits(streamed.grads, resident.grads));
      CHECK(same_bits(streamed.weights, resident.weights));
      CHECK(streamed.peak <= budget);
      CHECK(streamed.streamed_bytes > 0);
    }
    // Layer inputs offloaded to host memory: the same bits, less device memory.
    const RunResult off = train(dir, k, 0, {}, {}, 3, true);
    CHECK(off.losses == resident.losses);
    CHECK(same_bits(off.weights, resident.weights));
    CHECK(off.peak <= free.peak);
    // The top layer inputs kept on the device, the rest offloaded: the same bits, a peak
    // between the two, fewer bytes offloaded.
    for (int64_t on_device : {1, 3, 5}) {
      CAPTURE(on_device);
      const RunResult part = train(dir, k, 0, {}, {}, 3, true, false, on_device);
      CHECK(part.losses == resident.losses);
      CHECK(same_bits(part.grads, resident.grads));
      CHECK(same_bits(part.weights, resident.weights));
      CHECK(part.peak >= off.peak);
      CHECK(part.peak <= free.peak + free.peak / 8);  // two in-flight rows at most beyond the resident set
      CHECK(part.offloaded_bytes < off.offloaded_bytes);
      CHECK(part.offloaded_bytes == off.offloaded_bytes / 5 * static_cast<uint64_t>(5 - on_device));
    }
    // Below what the run needs: the allocator refuses, naming the budget.
    CHECK_THROWS_WITH_AS(train(dir, k, free.peak / 2, {}), doctest::Contains("budget"), OutOfMemory);
  }
}

TEST_CASE("a quantized base (nf4, int8, fp8): streamed QLoRA training has the bits of resident, moving fewer bytes") {
  TempDir tmp;
  const std::string dir = five_layer_model(tmp);
  const RunResult dense = train(dir, 1, 0, {});
  for (QuantFormat f : {QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8}) {
    CAPTURE(quant_format_name(f));
    const RunResult resident = train(dir, 0, 0, {}, {}, 3, false, false, 0, 1, 2, f);
    for (double l : resident.losses) CHECK(std::isfinite(l));
    CHECK(resident.losses != dense.losses);  // the base really is the quantized one
    for (int64_t k : {1, 2, 5}) {
      CAPTURE(k);
      const RunResult streamed = train(dir, k, 0, {}, {}, 3, false, false, 0, 1, 2, f);
      CHECK(streamed.losses == resident.losses);
      CHECK(same_bits(streamed.grads, resident.grads));
      CHECK(same_bits(streamed.weights, resident.weights));
      if (k == 1) CHECK(streamed.streamed_bytes < dense.streamed_bytes / 2);
    }
    // Several micro-batches sharing each load and offloaded activations: still the same bits.
    const RunResult shared = train(dir, 2, 0, {}, {}, 3, true, false, 0, 2, 2, f);
    CHECK(shared.losses == resident.losses);
    CHECK(same_bits(shared.weights, resident.weights));
  }
}

TEST_CASE("micro-batches sharing each weight load: the bits of resident training, the weights copied once per step") {
  TempDir tmp;
  const std::string dir = five_layer_model(tmp);
  for (uint32_t micro : {2u, 3u, 4u}) {
    CAPTURE(micro);
    const RunResult resident = train(dir, 0, 0, {}, {}, 3, false, false, 0, 1, micro);
    REQUIRE(resident.losses.size() == 3 * micro);
    for (int64_t k : {1, 2, 5}) {
      CAPTURE(k);
      const RunResult each = train(dir, k, 0, {}, {}, 3, false, false, 0, 1, micro);  // a load per micro-batch
      const RunResult shared = train(dir, k, 0, {}, {}, 3, false, false, 0, micro, micro);
      CHECK(shared.losses == resident.losses);
      CHECK(same_bits(shared.grads, resident.grads));
      CHECK(same_bits(shared.weights, resident.weights));
      CHECK(each.losses == resident.losses);
      // The weights cross once per step: the group copies exactly what a one-micro-batch step
      // copies; a load per micro-batch copies (nearly) micro times as much.
      const RunResult single = train(dir, k, 0, {}, {}, 3, false, false, 0, 1, 1);
      CHECK(shared.streamed_bytes == single.streamed_bytes);
      CHECK(shared.copies == single.copies);
      if (k == 1) CHECK(each.streamed_bytes > (micro - 1) * shared.streamed_bytes);
      // Under a budget of its own unlimited peak, and with activations offloaded (all of them,
      // or the top two kept): the same bits.
      const RunResult tight = train(dir, k, shared.peak, {}, {}, 3, false, false, 0, micro, micro);
      CHECK(tight.losses == resident.losses);
      CHECK(same_bits(tight.weights, resident.weights));
      CHECK(tight.peak <= shared.peak);
      for (int64_t on_device : {0, 2}) {
        CAPTURE(on_device);
        const RunResult off = train(dir, k, 0, {}, {}, 3, true, false, on_device, micro, micro);
        CHECK(off.losses == resident.losses);
        CHECK(same_bits(off.grads, resident.grads));
        CHECK(same_bits(off.weights, resident.weights));
        CHECK(off.peak <= shared.peak);
        CHECK(off.offloaded_bytes > 0);
      }
    }
    // Groups smaller than the step (the last one smaller still where they do not divide it):
    // the same bits, and a load per group (a pass may find its first chunk still in a buffer
    // from the pass before, so up to one chunk less).
    for (uint32_t per_load = 2; per_load < micro; ++per_load) {
      CAPTURE(per_load);
      const RunResult grouped = train(dir, 1, 0, {}, {}, 3, true, false, 0, per_load, micro);
      CHECK(grouped.losses == resident.losses);
      CHECK(same_bits(grouped.grads, resident.grads));
      CHECK(same_bits(grouped.weights, resident.weights));
      const RunResult single = train(dir, 1, 0, {}, {}, 3, false, false, 0, 1, 1);
      const uint64_t groups = (micro + per_load - 1) / per_load;
      CHECK(grouped.streamed_bytes <= groups * single.streamed_bytes);
      CHECK(grouped.streamed_bytes > groups * single.streamed_bytes - single.streamed_bytes / 4);
    }
    // Sparse layers: the shared backward stops at the lowest trained layer too.
    const RunResult sparse_res = train(dir, 0, 0, {3, 4}, {}, 3, false, false, 0, 1, micro);
    const RunResult sparse = train(dir, 1, 0, {3, 4}, {}, 3, true, false, 0, micro, micro);
    CHECK(sparse.losses == sparse_res.losses);
    CHECK(same_bits(sparse.weights, sparse_res.weights));
  }
}

TEST_CASE("a traced streamed run: every copy, chunk window and activation copy is a span, and the bits are the same") {
  TempDir tmp;
  const std::string dir = five_layer_model(tmp);
  const RunResult resident = train(dir, 0, 0, {}, {}, 2);
  const RunResult traced = train(dir, 2, 0, {}, {}, 2, true, true);
  CHECK(traced.losses == resident.losses);
  CHECK(same_bits(traced.weights, resident.weights));
  std::map<std::string, int64_t> count;
  for (const TraceSpan& t : traced.trace) {
    ++count[t.lane];
    CHECK(t.end_ms >= t.start_ms);
    CHECK(t.start_ms >= 0);
    CHECK(t.issued_ms >= 0);
    if (t.lane == "copy" || t.lane == "compute")
      CHECK((t.slot == 0 || t.slot == 1));  // one of the two buffers
    else
      CHECK(t.slot == -1);
    if (t.lane == "host") {  // on the CPU backend only the allocator's backend calls hold the host up
      ++count[t.call];
      CHECK((t.call == "device_malloc" || t.call == "device_free"));
      CHECK(t.bytes >= (size_t{1} << 9));
    }
  }
  // Every backend call made while traced is a host span (the first step fills the cache).
  CHECK(traced.traced_backend_calls > 0);
  CHECK(count["host"] == static_cast<int64_t>(traced.traced_backend_calls));
  // 2 steps x 2 micro-batches; each pass acquires every layer chunk and head slice going up and
  // again coming down (LoRA on every layer), and sends all 5 layer inputs out and back.
  const int64_t passes = 4;
  CHECK(count["copy"] == static_cast<int64_t>(traced.copies));
  CHECK(count["compute"] == passes * 2 * (traced.layer_chunks + traced.head_slices));
  CHECK(count["act_out"] == passes * 5);
  CHECK(count["act_in"] == passes * 5);
  // Untraced, nothing is recorded.
  CHECK(train(dir, 2, 0, {}, {}, 1, true).trace.empty());
}

TEST_CASE("a pass with loss_out leaves the returned loss on the device, and host ids give the same embedding") {
  TempDir tmp;
  const std::string dir = five_layer_model(tmp);
  Context ctx(Device::cpu());
  LlamaModel model = LlamaModel::load_to_host(ctx, dir);
  LoraSpec spec;
  spec.rank = 4;
  LoraAdapter ad = make_lora_adapter(ctx, model, spec, 3);
  StreamOptions so;
  so.head_granule = kGranule;
  StreamedWeights sw(ctx, model, so);
  Gradients g = make_gradients(ctx, model, &ad);
  TrainBatch batch = make_batch(ctx, model.config().vocab_size, 5);
  PassOptions opt;
  opt.lora = &ad;
  opt.head_granule = kGranule;
  opt.stream = &sw;
  const double returned = forward_backward(ctx, model, batch, g, opt);
  REQUIRE(std::isfinite(returned));
  batch.host_ids = clone(batch.ids);
  batch.ids = Tensor::zeros(batch.ids.shape(), DType::i32);  // the gather must read host_ids
  Tensor out = Tensor::zeros(Shape{1}, loss_dtype(model.dtype()));
  opt.loss_out = &out;
  CHECK(std::isnan(forward_backward(ctx, model, batch, g, opt)));
  CHECK(load_as_double(out.data(), out.dtype(), 0) == returned);
  // A wrong loss_out is refused before any gradient is touched.
  std::vector<Tensor> before;
  for (const Tensor& t : gradient_tensors(g)) before.push_back(clone(t));
  StreamOptions bad = so;
  bad.activation_layers_on_device = -1;
  CHECK_THROWS_WITH_AS(StreamedWeights(ctx, model, bad), doctest::Contains("activation layers on the device"),
                       InvalidArgument);
  Tensor wrong = Tensor::zeros(Shape{2}, loss_dtype(model.dtype()));
  opt.loss_out = &wrong;
  CHECK_THROWS_WITH_AS(forward_backward(ctx, model, batch, g, opt), doctest::Contains("loss_out"), InvalidArgument);
  // A group of micro-batches needs each loss_out, and one set of options per batch.
  PassOptions none = opt;
  none.loss_out = nullptr;
  CHECK_THROWS_WITH_AS(forward_backward_group(ctx, model, {&batch, &batch}, g, {none, none}),
                       doctest::Contains("needs PassOptions::loss_out"), InvalidArgument);
  CHECK_THROWS_WITH_AS(forward_backward_group(ctx, model, {&batch, &batch}, g, {none}),
                       doctest::Contains("2 batches and 1 pass options"), InvalidArgument);
  // So does a step's grouping of them, and a group needs at least one micro-batch.
  const std::vector<TrainBatch> two{batch, batch};
  PassOptions good = opt;
  good.loss_out = &out;
  CHECK_THROWS_WITH_AS(forward_backward_groups(ctx, model, two, g, {good, none}, 2),
                       doctest::Contains("needs PassOptions::loss_out"), InvalidArgument);
  CHECK_THROWS_WITH_AS(forward_backward_groups(ctx, model, two, g, {good, good}, 0),
                       doctest::Contains("at least one micro-batch per load"), InvalidArgument);
  CHECK_THROWS_WITH_AS(forward_backward_groups(ctx, model, two, g, {good}, 1),
                       doctest::Contains("2 batches and 1 pass options"), InvalidArgument);
  // It streams LoRA training only, every lane on one stream and one adapter.
  PassOptions resident = opt;
  resident.stream = nullptr;
  CHECK_THROWS_WITH_AS(forward_backward_group(ctx, model, {&batch}, g, {resident}),
                       doctest::Contains("streams LoRA training"), InvalidArgument);
  Tensor out2 = Tensor::zeros(Shape{1}, loss_dtype(model.dtype()));
  StreamedWeights sw2(ctx, model, so);
  PassOptions other = opt;
  other.loss_out = &out2;
  opt.loss_out = &out;
  other.stream = &sw2;
  CHECK_THROWS_WITH_AS(forward_backward_group(ctx, model, {&batch, &batch}, g, {opt, other}),
                       doctest::Contains("share one stream and one adapter"), InvalidArgument);
  LoraAdapter ad2 = make_lora_adapter(ctx, model, spec, 4);
  other.stream = &sw;
  other.lora = &ad2;
  CHECK_THROWS_WITH_AS(forward_backward_group(ctx, model, {&batch, &batch}, g, {opt, other}),
                       doctest::Contains("share one stream and one adapter"), InvalidArgument);
  // A step's later groups are checked before its first group runs (the gradients below stay
  // untouched): a mismatched adapter in the second group, a missing loss_out in a last group of
  // one.
  const std::vector<TrainBatch> four{batch, batch, batch, batch};
  CHECK_THROWS_WITH_AS(forward_backward_groups(ctx, model, four, g, {opt, opt, opt, other}, 2),
                       doctest::Contains("share one stream and one adapter"), InvalidArgument);
  const std::vector<TrainBatch> three{batch, batch, batch};
  CHECK_THROWS_WITH_AS(forward_backward_groups(ctx, model, three, g, {opt, opt, none}, 2),
                       doctest::Contains("needs PassOptions::loss_out"), InvalidArgument);
  std::vector<Tensor> after;
  for (const Tensor& t : gradient_tensors(g)) after.push_back(clone(t));
  CHECK(same_bits(before, after));
}

TEST_CASE("sparse layers: the streamed backward stops at the lowest trained layer with full-depth gradients") {
  TempDir tmp;
  const std::string dir = five_layer_model(tmp);
  // One optimizer step (two micro-batches): adapters on layers 3 and 4, against adapters on
  // every layer with B = 0 below layer 3 (the same forward, but a backward down to layer 0).
  const RunResult sparse = train(dir, 1, 0, {3, 4}, {}, 1);
  const RunResult deep = train(dir, 1, 0, {}, {0, 1, 2}, 1);
  CHECK(sparse.losses == deep.losses);
  // Modules are listed by layer: layers 3 and 4 are the last ones of the full-depth list.
  REQUIRE(deep.grads.size() > sparse.grads.size());
  const std::vector<Tensor> deep_top(deep.grads.end() - static_cast<std::ptrdiff_t>(sparse.grads.size()),
                                     deep.grads.end());
  CHECK(same_bits(sparse.grads, deep_top));
  CHECK(same_bits(sparse.weights, std::vector<Tensor>(deep.weights.end() - static_cast<std::ptrdiff_t>(sparse.weights.size()),
                                                      deep.weights.end())));
  // No chunk below layer 3 is streamed for the backward: 3 layer chunks fewer per micro-batch.
  CHECK(sparse.streamed_bytes < deep.streamed_bytes);
}

TEST_CASE("streamed generation and evaluation: the resident model's logits and loss, in less device memory") {
  TempDir tmp;
  const std::string dir = five_layer_model(tmp);
  const std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 8};
  const auto run = [&](int64_t k, std::vector<Tensor>* logits, double* loss, size_t* peak) {
    CachingAllocator alloc(make_host_raw_backend(), 0);
    Context ctx(Device::cpu(), alloc, 0);
    LlamaModel model = k > 0 ? LlamaModel::load_to_host(ctx, dir) : LlamaModel::load(ctx, dir);
    std::optional<StreamedWeights> sw;
    if (k > 0) {
      StreamOptions so;
      so.layers_per_chunk = k;
      so.head_granule = kGranule;
      sw.emplace(ctx, model, so);
    }
    WeightFeed* feed = sw ? &*sw : nullptr;
    KVCache cache = model.make_cache(ctx, 1, 16);
    Tensor l = model.prefill(ctx, cache, {prompt}, feed);
    logits->push_back(clone(l));
    for (int i = 0; i < 4; ++i) {
      // Greedy: the argmax of the last logits.
      const float* row = l.data_as<float>();
      int32_t best = 0;
      for (int32_t v = 1; v < model.config().vocab_size; ++v)
        if (row[v] > row[best]) best = v;
      l = model.decode(ctx, cache, {best}, feed);
      logits->push_back(clone(l));
    }
    const TrainBatch b = make_batch(ctx, model.config().vocab_size, 77);
    *loss = model.loss(ctx, b.ids, b.positions, b.seqs, b.labels, feed);
    *peak = alloc.stats().peak_reserved;
  };
  std::vector<Tensor> ref;
  double ref_loss = 0;
  size_t ref_peak = 0;
  run(0, &ref, &ref_loss, &ref_peak);
  for (int64_t k : {1, 2}) {
    CAPTURE(k);
    std::vector<Tensor> got;
    double loss = 0;
    size_t peak = 0;
    run(k, &got, &loss, &peak);
    REQUIRE(got.size() == ref.size());
    for (size_t i = 0; i < got.size(); ++i) {
      CAPTURE(i);
      CHECK(rel_error(got[i].to_dtype(DType::f64), ref[i].to_dtype(DType::f64)) < 1e-5);
    }
    CHECK(loss == doctest::Approx(ref_loss).epsilon(1e-5));
    CHECK(peak < ref_peak);
  }
}
