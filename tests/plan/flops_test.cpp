// Model FLOPs per token against the counts written out by hand for a small Llama shape.
#include <doctest/doctest.h>

#include "model/init.h"
#include "plan/flops.h"

using namespace onn;

TEST_CASE("training FLOPs per token: 6P + attention x3 (full), 4P + attention x3 (LoRA), forward below the lowest trained layer") {
  ModelConfig c = find_preset("tiny").config;
  c.hidden_size = 8;
  c.intermediate_size = 20;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 2;
  c.num_hidden_layers = 3;
  c.vocab_size = 50;
  // Per layer: q 8x8, k and v 8x4 each, o 8x8, gate/up/down 8x20 each = 64+64+64+480 = 672.
  const double P = 3 * 672 + 50 * 8;
  CHECK(linear_parameters(c) == P);
  const double ctx = 10;                  // keys per query
  const double attn = 3 * (4.0 * 8 * ctx);  // layers x (QK^T + PV: 2 x 2 x H*D per key)
  CHECK(forward_flops_per_token(c, ctx) == 2 * P + attn);
  CHECK(training_flops_per_token(c, ctx, true) == 6 * P + 3 * attn);
  CHECK(training_flops_per_token(c, ctx, false) == 4 * P + 3 * attn);
  // Trained from layer 2 up: layers 0 and 1 forward only.
  const double layer_fwd = 2 * 672 + 4.0 * 8 * ctx;
  CHECK(training_flops_per_token(c, ctx, false, 2) ==
        doctest::Approx(2 * layer_fwd + (4 * 672 + 3 * 4.0 * 8 * ctx) + 4 * 50 * 8));
}
