// The CPU's bf16 GEMM (CpuMatmul::bf16): oneDNN's matmul over bf16 inputs with f32
// accumulation and an f32 result (AMX or AVX-512 BF16 where the CPU has them). Called per tile
// of C on the pool's threads, like sgemm: oneDNN's own OpenMP threading is held to one thread
// on each caller, so every tile is one single-threaded call and the result does not depend on
// the thread count. Primitives are cached per thread and shape.
#include <omp.h>

#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

#include "kernels/cpu/matmul_bf16.h"
#include "runtime/error.h"

namespace onn {

namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::desc matrix(int64_t rows, int64_t cols, int64_t ld, bool transposed, memory::data_type t) {
  return memory::desc({rows, cols}, t, transposed ? memory::dims{1, ld} : memory::dims{ld, 1});
}

dnnl::matmul::primitive_desc describe(const Bf16Gemm& g) {
  const memory::desc a = matrix(g.m, g.k, g.lda, g.trans_a, memory::data_type::bf16);
  const memory::desc b = matrix(g.k, g.n, g.ldb, g.trans_b, memory::data_type::bf16);
  const memory::desc c = matrix(g.m, g.n, g.ldc, false, memory::data_type::f32);
  dnnl::primitive_attr attr;
  if (g.alpha != 1.0f) attr.set_output_scales(0, {g.alpha});
  if (g.beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(g.beta);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, cpu_engine());
}

using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float>;

}  // namespace

std::string cpu_bf16_gemm_impl() {
  static const std::string impl = [] {
    try {
      return std::string(describe({false, false, 64, 64, 64, 64, 64, 64, 1.0f, 0.0f}).impl_info_str());
    } catch (const dnnl::error&) {
      return std::string();
    }
  }();
  return impl;
}

void cpu_bf16_gemm(const Bf16Gemm& g, const uint16_t* a, const uint16_t* b, float* c) {
  thread_local const bool one_thread = (omp_set_num_threads(1), true);
  (void)one_thread;
  thread_local dnnl::stream stream(cpu_engine());
  struct Primitive {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul matmul;
  };
  thread_local std::map<Key, Primitive> cache;
  const Key key{g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.alpha, g.beta};
  auto it = cache.find(key);
  if (it == cache.end()) {
    dnnl::matmul::primitive_desc pd = describe(g);
    dnnl::matmul mm(pd);
    it = cache.emplace(key, Primitive{std::move(pd), std::move(mm)}).first;
  }
  const Primitive& p = it->second;
  memory ma(p.pd.src_desc(), cpu_engine(), const_cast<uint16_t*>(a));
  memory mb(p.pd.weights_desc(), cpu_engine(), const_cast<uint16_t*>(b));
  memory mc(p.pd.dst_desc(), cpu_engine(), c);
  p.matmul.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  stream.wait();
}

}  // namespace onn
