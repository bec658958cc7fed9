// Training and evaluation passes (model/training.h): the checks of what a caller passes, then
// model/stack.h's layer loop over the stream or the model's resident weights.
#include "model/training.h"

#include <algorithm>

#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "model/stack.h"
#include "model/streaming.h"
#include "runtime/error.h"

namespace onn {

Gradients make_gradients(Context& ctx, const LlamaModel& model, const LoraAdapter* adapter) {
  Gradients g;
  g.config = model.config();
  if (adapter) {
    g.lora.spec = adapter->spec;
    std::vector<std::pair<Shape, DType>> specs;  // packed like the adapter's masters
    for (const LoraModule& m : adapter->modules)
      for (const Tensor* t : {&m.a, &m.b}) specs.emplace_back(t->shape(), t->dtype());
    const std::vector<Tensor> t = Tensor::empty_packed(specs, ctx.allocator());
    for (size_t i = 0; i < adapter->modules.size(); ++i) {
      LoraModule d;
      d.layer = adapter->modules[i].layer;
      d.name = adapter->modules[i].name;
      d.a = d.a_c = t[2 * i];
      d.b = d.b_c = t[2 * i + 1];
      g.lora.modules.push_back(std::move(d));
    }
    g.lora.bind(model.config());
  } else {
    if (model.quant_format() != QuantFormat::none)
      throw InvalidArgument("full training needs a dense base; this one is " +
                            std::string(quant_format_name(model.quant_format())) +
                            " (frozen): train LoRA adapters on it (QLoRA)");
    g.full = weights_like(ctx, model.config(), model.weights(), lora_master_dtype(model.dtype()));
  }
  zero_gradients(ctx, g);
  return g;
}

std::vector<Tensor> gradient_tensors(const Gradients& g) {
  std::vector<Tensor> out;
  for (const LoraModule& m : g.lora.modules) {
    out.push_back(m.a);
    out.push_back(m.b);
  }
  if (g.full) {
    // named_weights lists each tensor once (fused whole, a tied head once).
    for (const auto& [name, t] : named_weights(g.config, *g.full)) out.push_back(t);
  }
  return out;
}

std::vector<Tensor> layer_gradients(const Gradients& g, int64_t layer) {
  std::vector<Tensor> out;
  for (const LoraModule& m : g.lora.modules) {
    if (m.layer != layer) continue;
    out.push_back(m.a);
    out.push_back(m.b);
  }
  if (g.full && layer >= 0 && layer < static_cast<int64_t>(g.full->layers.size())) {
    for (const Tensor& t : layer_parts(g.config, g.full->layers[static_cast<size_t>(layer)])) out.push_back(t);
  }
  return out;
}

void zero_gradients(Context& ctx, Gradients& g) {
  for (Tensor& t : gradient_tensors(g)) t.fill_bytes(0, &ctx.compute());
}

namespace {

// PassOptions::loss_out, when set (or required): one value of the loss dtype on the device,
// checked before any gradient is touched.
void check_loss_out(Context& ctx, const LlamaModel& model, const Tensor* out, bool required, const char* where) {
  const DType t = loss_dtype(model.dtype());
  ONN_CHECK_ARG(out || !required, where, ": each micro-batch needs PassOptions::loss_out");
  if (out)
    ONN_CHECK_ARG(out->numel() == 1 && out->dtype() == t && out->device() == ctx.device(), where,
                  ": PassOptions::loss_out must be one ", dtype_name(t), " on ", ctx.device().str());
}

void check_batch(const TrainBatch& b) {
  ONN_CHECK_ARG(b.ids.rank() == 1 && b.ids.dtype() == DType::i32 && b.positions.shape() == b.ids.shape() &&
                    b.positions.dtype() == DType::i32 && b.labels.shape() == b.ids.shape() &&
                    b.labels.dtype() == DType::i32,
                "training batch: ids, positions and labels must be (N) I32");
}

// One micro-batch with its options as a lane of the stack's pass.
Lane lane_of(const TrainBatch& b, const PassOptions& o) {
  Lane lane;
  lane.ids = &b.ids;
  lane.host_ids = b.host_ids;
  lane.labels = &b.labels;
  lane.block.positions = &b.positions;
  lane.block.seqs = &b.seqs;
  lane.block.lora = o.lora;
  lane.block.dropout = o.dropout;
  lane.block.dropout_seed = o.dropout_seed;
  lane.loss_tokens = o.loss_tokens;
  lane.loss_out = o.loss_out;
  return lane;
}

// The batches as lanes of one pass over opts[0]'s stream (the lanes share it), or over the
// model's resident weights; grads null: evaluation. The callers checked the batches and options.
std::vector<double> run_lanes(Context& ctx, const LlamaModel& model, const std::vector<const TrainBatch*>& batches,
                              const PassOptions* opts, Gradients* grads) {
  std::vector<Lane> lanes;
  for (size_t i = 0; i < batches.size(); ++i) {
    check_context_length(model.config(), batches[i]->seqs.max_seqlen, "training");
    lanes.push_back(lane_of(*batches[i], opts[i]));
  }
  StackOptions so;
  so.recompute = opts[0].recompute || opts[0].stream;  // a streamed pass keeps only layer inputs
  so.head_granule = opts[0].head_granule;
  so.on_layer_gradients = opts[batches.size() - 1].on_layer_gradients;
  std::optional<ResidentWeights> resident;
  WeightFeed* feed = opts[0].stream;
  if (feed) {
    ONN_CHECK_ARG(!(grads && grads->full), "layer streaming trains LoRA adapters only (full training keeps its "
                  "weights on the device)");
  } else {
    feed = &resident.emplace(model);
  }
  return grads ? stack_train(ctx, model, *feed, lanes, *grads, so) : stack_loss(ctx, model, *feed, lanes, so);
}

}  // namespace

std::vector<std::pair<Tensor, Tensor>> use_bf16_compute_weights(Context& ctx, LlamaModel& model) {
  ONN_CHECK_ARG(model.quant_format() == QuantFormat::none && !model.on_host(),
                "use_bf16_compute_weights: the model must be dense and resident, not quantized (",
                quant_format_name(model.quant_format()), ") or loaded to the host for streaming");
  std::vector<std::pair<Tensor, Tensor>> pairs;
  const auto replace = [&](Tensor& field) {
    Tensor copy = Tensor::empty(field.shape(), DType::bf16, ctx.allocator());
    cast(ctx, field, copy);
    pairs.emplace_back(field, copy);
    field = copy;
  };
  ModelWeights& w = model.mutable_weights();
  const std::vector<LayerTensor> specs = layer_tensors(model.config());
  for (LayerWeights& layer : w.layers) {
    for (const LayerTensor& t : specs)
      if (t.quant) replace(layer.*t.field);
    bind_fused_views(model.config(), layer);
  }
  replace(w.lm_head);
  return pairs;
}

double forward_backward(Context& ctx, LlamaModel& model, const TrainBatch& batch, Gradients& grads,
                        const PassOptions& opt) {
  check_batch(batch);
  ONN_CHECK_ARG(grads.full.has_value() != (opt.lora != nullptr),
                "forward_backward: LoRA gradients need the adapter, full gradients none");
  check_loss_out(ctx, model, opt.loss_out, false, "forward_backward");
  return run_lanes(ctx, model, {&batch}, &opt, &grads)[0];
}

namespace {
// The checks a group of lanes sharing each weight load passes before any pass runs.
void check_group(Context& ctx, const LlamaModel& model, const std::vector<const TrainBatch*>& batches,
                 const Gradients& grads, const PassOptions* opts, const char* where) {
  for (size_t i = 0; i < batches.size(); ++i) {
    const PassOptions& o = opts[i];
    check_batch(*batches[i]);
    ONN_CHECK_ARG(o.stream && o.lora && !grads.full, where, " streams LoRA training (PassOptions::stream and ::lora "
                  "set, LoRA gradients)");
    ONN_CHECK_ARG(o.stream == opts[0].stream && o.lora == opts[0].lora, where, ": the micro-batches sharing a weight "
                  "load share one stream and one adapter");
    check_loss_out(ctx, model, o.loss_out, true, where);
  }
}
}  // namespace

void forward_backward_group(Context& ctx, LlamaModel& model, const std::vector<const TrainBatch*>& batches,
                            Gradients& grads, const std::vector<PassOptions>& opts) {
  ONN_CHECK_ARG(!batches.empty() && batches.size() == opts.size(), "forward_backward_group: ", batches.size(),
                " batches and ", opts.size(), " pass options");
  check_group(ctx, model, batches, grads, opts.data(), "forward_backward_group");
  run_lanes(ctx, model, batches, opts.data(), &grads);
}

void forward_backward_groups(Context& ctx, LlamaModel& model, const std::vector<TrainBatch>& batches,
                             Gradients& grads, const std::vector<PassOptions>& opts, size_t per_load) {
  ONN_CHECK_ARG(batches.size() == opts.size(), "forward_backward_groups: ", batches.size(), " batches and ",
                opts.size(), " pass options");
  ONN_CHECK_ARG(per_load >= 1, "forward_backward_groups: at least one micro-batch per load");
  // Every group is checked before the first runs: a bad option in a later group must not leave
  // the gradients holding the earlier groups' part of the step.
  std::vector<std::vector<const TrainBatch*>> groups;
  for (size_t i = 0; i < batches.size(); i += per_load) {
    groups.emplace_back();
    for (size_t j = i; j < std::min(batches.size(), i + per_load); ++j) groups.back().push_back(&batches[j]);
    const PassOptions* o = opts.data() + i;
    if (groups.back().size() > 1) {
      check_group(ctx, model, groups.back(), grads, o, "forward_backward_groups");
    } else {
      check_batch(batches[i]);
      ONN_CHECK_ARG(grads.full.has_value() != (o->lora != nullptr),
                    "forward_backward_groups: LoRA gradients need the adapter, full gradients none");
      check_loss_out(ctx, model, o->loss_out, true, "forward_backward_groups");
    }
  }
  size_t i = 0;
  for (const std::vector<const TrainBatch*>& group : groups) {
    const auto first = opts.begin() + static_cast<std::ptrdiff_t>(i);
    if (group.size() == 1)
      forward_backward(ctx, model, *group[0], grads, *first);
    else
      forward_backward_group(ctx, model, group, grads,
                             std::vector<PassOptions>(first, first + static_cast<std::ptrdiff_t>(group.size())));
    i += group.size();
  }
}

double forward_loss(Context& ctx, const LlamaModel& model, const TrainBatch& batch, const PassOptions& opt) {
  check_batch(batch);
  PassOptions o = opt;
  o.dropout = false;
  o.loss_out = nullptr;  // evaluation returns its loss
  return run_lanes(ctx, model, {&batch}, &o, nullptr)[0];
}

}  // namespace onn
