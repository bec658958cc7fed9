#include "plan/flops.h"

namespace onn {

namespace {

double layer_linear(const ModelConfig& c) {
  const double C = static_cast<double>(c.hidden_size), F = static_cast<double>(c.intermediate_size),
               HD = static_cast<double>(c.num_attention_heads * c.head_dim),
               KD = static_cast<double>(c.num_key_value_heads * c.head_dim);
  return C * HD + 2 * C * KD + HD * C + 3 * C * F;
}

double layer_attention(const ModelConfig& c, double mean_context) {
  // Q K^T and P V: 2 x (heads x head_dim) multiply-adds per key, each.
  return 4.0 * static_cast<double>(c.num_attention_heads * c.head_dim) * mean_context;
}

}  // namespace

double linear_parameters(const ModelConfig& c) {
  return static_cast<double>(c.num_hidden_layers) * layer_linear(c) +
         static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
}

double forward_flops_per_token(const ModelConfig& c, double mean_context) {
  return 2.0 * linear_parameters(c) + static_cast<double>(c.num_hidden_layers) * layer_attention(c, mean_context);
}

double training_flops_per_token(const ModelConfig& c, double mean_context, bool full, int64_t lowest_layer) {
  const double head = static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
  if (full) return 3.0 * forward_flops_per_token(c, mean_context);
  const double below = static_cast<double>(lowest_layer), above = static_cast<double>(c.num_hidden_layers) - below;
  const double layer_fwd = 2.0 * layer_linear(c) + layer_attention(c, mean_context);
  // Layers from lowest_layer up: forward, and backward to their inputs (the GEMMs once more,
  // attention twice more). The head: forward and its input gradient.
  return below * layer_fwd + above * (2.0 * 2.0 * layer_linear(c) + 3.0 * layer_attention(c, mean_context)) +
         4.0 * head;
}

}  // namespace onn
