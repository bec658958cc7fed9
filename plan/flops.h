// Model FLOPs of training and inference, for MFU (onn-bench) and the planner's time terms.
// Counted as multiply-adds x 2 of the GEMMs and attention, the convention of the PaLM paper's
// MFU: recomputation is not counted (it is overhead, not model work), nor are norms,
// activations, the loss or LoRA's own rank-r products (about 2r(in+out)/(in*out) of each
// adapted projection, under 2% at r = 16 and 2048 wide).
#pragma once

#include "model/config.h"

namespace onn {

// Weights of every projection a token goes through: q, k, v, o, gate, up, down per layer and
// the LM head (the embedding is a lookup).
double linear_parameters(const ModelConfig& c);

// FLOPs of one token's forward pass when it attends `mean_context` keys on average (a causal
// window of T tokens: (T + 1) / 2).
double forward_flops_per_token(const ModelConfig& c, double mean_context);

// One token of a training step. full: forward, and backward to activations and weights (6P
// plus three times the attention). LoRA: forward and backward to activations only (4P plus
// three times the attention) for every layer from `lowest_layer` up; layers below it run
// forward only.
double training_flops_per_token(const ModelConfig& c, double mean_context, bool full, int64_t lowest_layer = 0);

}  // namespace onn
