// The LLaMA-family forward on CUDA against transformers' logits (label gpu): F32 compute
// below 1e-4 normalized error, BF16 weights and activations below 2e-2.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "model/llama.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("model forward on CUDA matches transformers' logits (F32 and BF16)") {
  Context ctx(Device::cuda(0));
  for (const char* name : {"llama_gqa", "llama_tied", "qwen2", "phi3"}) {
    for (DType t : {DType::f32, DType::bf16}) {
      CAPTURE(name);
      CAPTURE(dtype_name(t));
      // The GPU machine runs a carried binary from another checkout path: it says where the
      // data is (scripts/gpu-verify.sh).
      const char* env = std::getenv("ONN_TEST_DATA_DIR");
      const std::string dir = std::string(env ? env : ONN_TEST_DATA_DIR) + "/models/" + name;
      const LlamaModel model = LlamaModel::load(ctx, dir, t);
      const SafetensorsFile ref = SafetensorsFile::open(dir + "/reference.safetensors");
      const Tensor ids2 = clone(ref.tensor("input_ids"));
      const int64_t b = ids2.dim(0), n = ids2.dim(1);
      const Tensor ids = ids2.reshape(Shape{b * n}).to(ctx.device());
      const Tensor pos = sequence_positions(b, n).to(ctx.device());
      const Tensor logits = model.logits(ctx, ids, pos, uniform_seqs(ctx, b, n));
      ctx.synchronize();
      const double err = rel_error(logits.to(Device::cpu()), ref.tensor("logits"));
      CAPTURE(err);
      CHECK(err < (t == DType::f32 ? 1e-4 : 2e-2));
    }
  }
}
