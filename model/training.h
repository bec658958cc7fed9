// The training pass of the LLaMA-family model: a forward that keeps what the backward needs
// (every layer's internals, or only the layer inputs with --recompute), the backward through
// every block into LoRA or full-weight gradients, and the evaluation loss with an adapter. The
// checks of what a caller passes live here; the passes themselves are model/stack.h's.
#pragma once

#include <functional>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "kernels/attention.h"
#include "model/block.h"
#include "model/llama.h"
#include "model/lora.h"

namespace onn {

class StreamedWeights;

// One micro-batch of packed documents on the device.
struct TrainBatch {
  Tensor ids;        // (N) I32
  Tensor positions;  // (N) I32, restarting per document
  Tensor labels;     // (N) I32: the next token, or kIgnoreIndex
  AttentionSeqs seqs;
  // Optional: ids on the host as well. The streamed path gathers embedding rows on the host;
  // with these it need not read ids back (which waits for the device).
  Tensor host_ids;
};

// Zeroed gradients for an adapter (LoRA) or for every weight of the model (adapter null).
Gradients make_gradients(Context& ctx, const LlamaModel& model, const LoraAdapter* adapter);
void zero_gradients(Context& ctx, Gradients& g);
// Every gradient tensor once (for the norm, clipping and the optimizer), in a fixed order.
std::vector<Tensor> gradient_tensors(const Gradients& g);
// The gradient tensors layer l's backward completes (its adapter modules, or all its weights):
// a subset of gradient_tensors, disjoint between layers; the rest (embedding, final norm, LM
// head) are complete only when the pass ends.
std::vector<Tensor> layer_gradients(const Gradients& g, int64_t layer);

// Full training whose products take a stored BF16 weight (cpu_bf16_weights: the CPU with
// --cpu-matmul bf16): every layer's projection weights (fused originals whole) and the LM head
// replaced in the model by BF16 copies, cast once here instead of once per product. Returns
// (F32 weight, its copy) pairs: the F32 tensors stay the masters the optimizer updates, and it
// refreshes each copy from its master (adamw_step's param_copy). A tied head's copy leaves the
// embedding F32 for the lookup. The copies round as each product's inputs did, so a pass gives
// the bits it gave before wherever its products are large enough for the bf16 GEMM.
std::vector<std::pair<Tensor, Tensor>> use_bf16_compute_weights(Context& ctx, LlamaModel& model);

struct PassOptions {
  const LoraAdapter* lora = nullptr;  // applied in the forward (and trained when grads are LoRA)
  bool recompute = false;             // keep only layer inputs; rebuild internals in the backward
  bool dropout = true;                // LoRA dropout (off for evaluation)
  uint64_t dropout_seed = 0;          // fresh per micro-batch: masks from (seed, layer, module)
  // The token count the loss is divided by (the whole optimizer step's valid labels across
  // gradient accumulation); 0: this micro-batch's own count.
  int64_t loss_tokens = 0;
  // The LM head through SlicedLmHeadLoss with this granule (0: the fused lm_head_cross_entropy).
  // The streamed path always slices (with the stream's granule); set it on a resident pass to
  // get the streamed pass's bits.
  int64_t head_granule = 0;
  // Weights streamed from host memory (LoRA training and evaluation); the model passed along
  // is the host-resident one the stream was built from.
  StreamedWeights* stream = nullptr;
  // Set: the pass copies its loss into this (1) device tensor on the compute stream and
  // returns NaN without waiting for the device, so that micro-batches queue back to back (the
  // next one's first chunk is still in a stream buffer, its copies overlap this one's tail).
  // The caller reads the losses once the device is done. forward_loss ignores it.
  Tensor* loss_out = nullptr;
  // Set: called in the backward as soon as layer l's gradients (layer_gradients(grads, l)) hold
  // this pass's contribution, top layer first, after the layer's work is queued on the compute
  // stream: the trainer sets it on a step's last pass to start summing each layer over the
  // ranks while the layers below run (a group of lanes takes its last lane's).
  std::function<void(int64_t layer)> on_layer_gradients;
};

// Forward and backward over one micro-batch, gradients added into `grads`. Returns the
// micro-batch's loss (its token losses summed over loss_tokens), on the host (NaN with
// opt.loss_out: the loss is left there instead). LoRA training stops the backward at the
// lowest adapted layer: nothing below it runs backward.
double forward_backward(Context& ctx, LlamaModel& model, const TrainBatch& batch, Gradients& grads,
                        const PassOptions& opt);

// Streamed LoRA training of several micro-batches per weight load ("load once, process many
// samples"): every chunk of weights copied to the device serves batches[0], then batches[1],
// ... before the next chunk, so the weights cross PCIe once per group instead of once per
// micro-batch. Each gradient receives the micro-batches' contributions in batch order, as
// consecutive forward_backward calls would add them: the same bits. opts[i] are batch i's
// (one stream, one adapter; each with loss_out, where its loss is left).
void forward_backward_group(Context& ctx, LlamaModel& model, const std::vector<const TrainBatch*>& batches,
                            Gradients& grads, const std::vector<PassOptions>& opts);

// A step's micro-batches in order, each `per_load` consecutive ones a group sharing every
// weight load (forward_backward_group; the last group may be smaller, and a group of one runs
// forward_backward). Every opts[i] needs loss_out, where batch i's loss is left. Every group's
// batches and options are checked before the first group runs, so a refusal leaves the
// gradients untouched.
void forward_backward_groups(Context& ctx, LlamaModel& model, const std::vector<TrainBatch>& batches,
                             Gradients& grads, const std::vector<PassOptions>& opts, size_t per_load);

// The loss without gradients (evaluation), with the adapter when opt.lora is set.
double forward_loss(Context& ctx, const LlamaModel& model, const TrainBatch& batch, const PassOptions& opt);

}  // namespace onn
