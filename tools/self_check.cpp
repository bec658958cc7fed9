// Self-check: safetensors round trip of every dtype, CPU GEMM against a double-precision
// loop, causal GQA attention (forward and backward) and the LM head loss against the F64 CPU
// reference on every backend present, and on a CUDA device GEMM parity (f32 and bf16) and
// the allocator budget.
#include "tools/self_check.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/matmul.h"
#include "kernels/reference.h"
#include "runtime/allocator.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

namespace onn::tools {

namespace {

// Random values rounded to t: the device copy, and the same values as a CPU F64 tensor.
std::pair<Tensor, Tensor> rounded_input(Context& ctx, const Shape& shape, DType t, std::mt19937& rng) {
  const Tensor stored = random_tensor(shape, rng).to_dtype(t);
  return {stored.to(ctx.device()), stored.to_dtype(DType::f64)};
}

double error_vs(Context& ctx, const Tensor& got, const Tensor& ref64) {
  ctx.synchronize();
  const Tensor host = got.to(Device::cpu());
  std::vector<double> ref(static_cast<size_t>(ref64.numel()));
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = load_as_double(ref64.data(), DType::f64, i);
  return normalized_error(host, ref);
}

std::string verdict(double err, double tol) {
  char buf[80];
  std::snprintf(buf, sizeof buf, "worst relative error %.2e (limit %.0e)", err, tol);
  return (err < tol ? "" : "FAIL: ") + std::string(buf);
}

// Two packed sequences (37 and 64 tokens), H = 8 over KVH = 2, D = 64: out, dq, dk, dv.
std::string attention_check(Context& ctx, DType t, std::mt19937& rng) {
  Context cpu(Device::cpu());
  const int64_t n = 101, h = 8, kvh = 2, d = 64;
  const auto [q, q64] = rounded_input(ctx, Shape{n, h, d}, t, rng);
  const auto [k, k64] = rounded_input(ctx, Shape{n, kvh, d}, t, rng);
  const auto [v, v64] = rounded_input(ctx, Shape{n, kvh, d}, t, rng);
  const auto [g, g64] = rounded_input(ctx, Shape{n, h, d}, t, rng);
  const AttentionSeqs seqs = packed_seqs(ctx, {37, 64}), seqs64 = packed_seqs(cpu, {37, 64});
  Tensor o = Tensor::empty(q.shape(), t, ctx.allocator()), lse = Tensor::empty(Shape{n, h}, DType::f32, ctx.allocator());
  Tensor dq = Tensor::empty(q.shape(), t, ctx.allocator()), dk = Tensor::empty(k.shape(), t, ctx.allocator()),
         dv = Tensor::empty(v.shape(), t, ctx.allocator());
  attention_forward(ctx, q, k, v, seqs, 0.125f, o, lse);
  attention_backward(ctx, q, k, v, o, lse, g, seqs, 0.125f, dq, dk, dv);
  Tensor o64 = Tensor::empty(q.shape(), DType::f64), l64 = Tensor::empty(Shape{n, h}, DType::f64);
  Tensor dq64 = Tensor::empty(q.shape(), DType::f64), dk64 = Tensor::empty(k.shape(), DType::f64),
         dv64 = Tensor::empty(v.shape(), DType::f64);
  attention_forward(cpu, q64, k64, v64, seqs64, 0.125f, o64, l64);
  attention_backward(cpu, q64, k64, v64, o64, l64, g64, seqs64, 0.125f, dq64, dk64, dv64);
  double err = 0;
  for (auto [got, ref] : {std::pair{&o, &o64}, {&dq, &dq64}, {&dk, &dk64}, {&dv, &dv64}})
    err = std::max(err, error_vs(ctx, *got, *ref));
  return verdict(err, t == DType::bf16 ? 1e-2 : 1e-5);
}

// 45 tokens (some ignored) through a (500, 64) LM head in chunks of 16: loss, dh.
std::string lm_head_check(Context& ctx, DType t, std::mt19937& rng) {
  Context cpu(Device::cpu());
  const int64_t n = 45, c = 64, vocab = 500;
  const auto [hd, h64] = rounded_input(ctx, Shape{n, c}, t, rng);
  const auto [w, w64] = rounded_input(ctx, Shape{vocab, c}, t, rng);
  Tensor labels = Tensor::empty(Shape{n}, DType::i32);
  for (int64_t i = 0; i < n; ++i)
    labels.data_as<int32_t>()[i] = i % 5 == 2 ? kIgnoreIndex : static_cast<int32_t>(rng() % vocab);
  const Tensor dlabels = labels.to(ctx.device());
  const DType ld = loss_dtype(t);
  Tensor loss = Tensor::empty(Shape{1}, ld, ctx.allocator()), dh = Tensor::empty(Shape{n, c}, t, ctx.allocator());
  LmHeadLossOptions opt;
  opt.chunk_tokens = 16;
  lm_head_cross_entropy(ctx, hd, w, dlabels, loss, &dh, nullptr, opt);
  Tensor loss64 = Tensor::empty(Shape{1}, DType::f64), dh64 = Tensor::empty(Shape{n, c}, DType::f64);
  lm_head_cross_entropy(cpu, h64, w64, labels, loss64, &dh64, nullptr);
  const double err = std::max(error_vs(ctx, loss, loss64), error_vs(ctx, dh, dh64));
  return verdict(err, t == DType::bf16 ? 1e-2 : 1e-5);
}

}  // namespace

bool run_self_check(std::ostream& out) {
  int passed = 0, failed = 0;
  auto check = [&](const std::string& name, const std::function<std::string()>& body) {
    std::string detail;
    bool ok = false;
    try {
      detail = body();
      ok = detail.rfind("FAIL", 0) != 0;
    } catch (const std::exception& e) {
      detail = std::string("FAIL: ") + e.what();
    }
    out << (ok ? "ok    " : "FAIL  ") << name << (detail.empty() ? "" : ": " + detail) << "\n";
    (ok ? passed : failed)++;
  };
  std::mt19937 rng(1234);

  check("safetensors round trip, every dtype", [&]() -> std::string {
    const auto dir = std::filesystem::temp_directory_path();
    const std::string path = (dir / ("onn-self-check-" + std::to_string(::getpid()) + ".safetensors")).string();
    std::vector<std::pair<std::string, Tensor>> ts;
    for (DType t : kAllDTypes) {
      Tensor x = Tensor::empty(Shape{3, 5}, t);
      for (int64_t i = 0; i < x.numel(); ++i) store_from_double(x.data(), t, static_cast<size_t>(i), (i % 7) - 3);
      ts.emplace_back(std::string("t_") + std::string(dtype_name(t)), x);
    }
    write_safetensors(path, ts, {{"written_by", "onn-info --self-check"}});
    const SafetensorsFile f = SafetensorsFile::open(path);
    std::string bad;
    for (const auto& [name, x] : ts) {
      const Tensor y = f.tensor(name);
      if (y.dtype() != x.dtype() || !(y.shape() == x.shape()) || std::memcmp(y.data(), x.data(), x.nbytes()) != 0)
        bad += name + " ";
    }
    std::filesystem::remove(path);
    return bad.empty() ? std::to_string(ts.size()) + " tensors" : "FAIL: differ: " + bad;
  });

  check("GEMM on the CPU vs a double-precision loop (33x65 @ 65x17)", [&]() -> std::string {
    Context ctx(Device::cpu());
    const Tensor a = random_tensor(Shape{33, 65}, rng), b = random_tensor(Shape{65, 17}, rng);
    const double err = normalized_error(matmul(ctx, a, b), matmul_reference(a, b, {}));
    char buf[64];
    std::snprintf(buf, sizeof buf, "relative error %.2e", err);
    return (err < 1e-5 ? "" : "FAIL: ") + std::string(buf);
  });

  {
    Context cpu(Device::cpu());
    check("attention (packed, GQA) forward + backward on the CPU, F32 vs F64",
          [&] { return attention_check(cpu, DType::f32, rng); });
    check("chunked LM head + cross-entropy on the CPU, F32 vs F64", [&] { return lm_head_check(cpu, DType::f32, rng); });
  }

  if (cuda_device_count() == 0) {
    out << "skip  CUDA checks: no CUDA device\n";
  } else {
    Context ctx(Device::cuda(0));
    for (DType t : {DType::f32, DType::bf16}) {
      const std::string tn(dtype_name(t));
      check("attention (packed, GQA) forward + backward on CUDA, " + tn + " vs the CPU",
            [&] { return attention_check(ctx, t, rng); });
      check("chunked LM head + cross-entropy on CUDA, " + tn + " vs the CPU", [&] { return lm_head_check(ctx, t, rng); });
    }
    for (DType t : {DType::f32, DType::bf16}) {
      check(std::string("GEMM on CUDA vs the CPU, ") + std::string(dtype_name(t)) + " (257x130 @ 130x67)",
            [&]() -> std::string {
              Tensor a = random_tensor(Shape{257, 130}, rng), b = random_tensor(Shape{130, 67}, rng);
              if (t == DType::bf16) {  // compare against the rounded inputs
                a = a.to_dtype(t).to_dtype(DType::f32);
                b = b.to_dtype(t).to_dtype(DType::f32);
              }
              const Tensor c = matmul(ctx, a.to_dtype(t).to(ctx.device()), b.to_dtype(t).to(ctx.device()), {}, DType::f32);
              ctx.synchronize();
              const double err = normalized_error(c.to(Device::cpu()), matmul_reference(a, b, {}));
              const double tol = t == DType::f32 ? 1e-5 : 1e-2;
              char buf[64];
              std::snprintf(buf, sizeof buf, "relative error %.2e (limit %.0e)", err, tol);
              return (err < tol ? "" : "FAIL: ") + std::string(buf);
            });
    }
    check("device allocator refuses a request over its budget", [&]() -> std::string {
      CachingAllocator alloc(make_cuda_raw_backend(0), size_t{64} << 20);
      void* p = alloc.allocate(size_t{48} << 20);
      bool refused = false;
      try {
        alloc.allocate(size_t{32} << 20);
      } catch (const OutOfMemory&) {
        refused = true;
      }
      alloc.deallocate(p, size_t{48} << 20);
      return refused && alloc.stats().peak_reserved <= (size_t{64} << 20) ? "" : "FAIL: budget not enforced";
    });
  }
  out << passed << " passed, " << failed << " failed\n";
  return failed == 0;
}

}  // namespace onn::tools
