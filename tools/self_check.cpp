// Self-check: safetensors round trip of every dtype, CPU GEMM against a double-precision
// loop, and on a CUDA device GEMM parity (f32 and bf16) and the allocator budget.
#include "tools/self_check.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/reference.h"
#include "runtime/allocator.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

namespace onn::tools {

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

  if (cuda_device_count() == 0) {
    out << "skip  CUDA checks: no CUDA device\n";
  } else {
    Context ctx(Device::cuda(0));
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
