// Embedding on CUDA. Forward: one block per token copies its row. Backward: ids are sorted
// with their positions (CUB's radix sort is stable, so equal ids keep position order); the
// block at the start of each run of equal ids sums that run's gradient rows in order and
// adds the sum into dweight. One owner per dweight row: no atomics, the same bits every run.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/backends.h"
#include "kernels/cuda/common.cuh"
#include "kernels/embedding.h"

namespace onn {

using namespace cuda_kernels;

namespace {

template <typename T>
__global__ void embedding_forward_kernel(const T* __restrict__ w, const int32_t* __restrict__ ids,
                                         T* __restrict__ out, int64_t v, int64_t c) {
  const int64_t i = blockIdx.x;
  const int32_t id = ids[i];
  T* o = out + i * c;
  if (id < 0 || id >= v) {
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) o[j] = from_f<T>(0.0f);
    return;
  }
  const T* r = w + static_cast<int64_t>(id) * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) o[j] = r[j];
}

template <typename T>
__global__ void embedding_backward_kernel(const int32_t* __restrict__ sorted_ids, const int32_t* __restrict__ order,
                                          const T* __restrict__ dout, float* __restrict__ dw, int64_t n, int64_t v,
                                          int64_t c) {
  const int64_t s = blockIdx.x;
  const int32_t id = sorted_ids[s];
  if ((s > 0 && sorted_ids[s - 1] == id) || id < 0 || id >= v) return;
  int64_t e = s + 1;
  while (e < n && sorted_ids[e] == id) ++e;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    float acc = 0.0f;
    for (int64_t k = s; k < e; ++k) acc += to_f(dout[static_cast<int64_t>(order[k]) * c + j]);
    dw[static_cast<int64_t>(id) * c + j] += acc;
  }
}

__global__ void iota_kernel(int32_t* p, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<int32_t>(i);
}

}  // namespace

void embedding_forward_cuda(Context& ctx, const Tensor& weight, const Tensor& ids, Tensor& out) {
  const int64_t n = ids.dim(0);
  if (n == 0) return;
  dispatch_float(weight.dtype(), "embedding_forward", [&](auto t) {
    using T = decltype(t);
    embedding_forward_kernel<T><<<static_cast<unsigned>(n), kThreads, 0, stream_of(ctx)>>>(
        ptr<const T>(weight), ptr<const int32_t>(ids), ptr<T>(out), weight.dim(0), weight.dim(1));
    ONN_CUDA_CHECK_LAUNCH();
  });
}

void embedding_backward_cuda(Context& ctx, const Tensor& ids, const Tensor& dout, Tensor& dweight) {
  const int64_t n = ids.dim(0), v = dweight.dim(0), c = dout.dim(1);
  if (n == 0) return;
  ONN_CHECK_ARG(n <= INT32_MAX, "embedding_backward: more than 2^31 tokens");
  cudaStream_t st = stream_of(ctx);
  Tensor order_in = Tensor::empty(Shape{n}, DType::i32, ctx.allocator());
  Tensor order = Tensor::empty(Shape{n}, DType::i32, ctx.allocator());
  Tensor sorted = Tensor::empty(Shape{n}, DType::i32, ctx.allocator());
  iota_kernel<<<grid_for(n), kThreads, 0, st>>>(ptr<int32_t>(order_in), n);
  ONN_CUDA_CHECK_LAUNCH();
  // All 32 bits take part: with fewer, an out-of-range id could sort between two copies of
  // a valid one and split its run between two blocks.
  const int end_bit = 32;
  size_t temp_bytes = 0;
  ONN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ptr<const int32_t>(ids), ptr<int32_t>(sorted),
                                                 ptr<const int32_t>(order_in), ptr<int32_t>(order),
                                                 static_cast<int>(n), 0, end_bit, st));
  Tensor temp = Tensor::empty(Shape{static_cast<int64_t>(temp_bytes > 0 ? temp_bytes : 1)}, DType::u8, ctx.allocator());
  ONN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data(), temp_bytes, ptr<const int32_t>(ids),
                                                 ptr<int32_t>(sorted), ptr<const int32_t>(order_in),
                                                 ptr<int32_t>(order), static_cast<int>(n), 0, end_bit, st));
  dispatch_float(dout.dtype(), "embedding_backward", [&](auto t) {
    using T = decltype(t);
    embedding_backward_kernel<T><<<static_cast<unsigned>(n), kThreads, 0, st>>>(
        ptr<const int32_t>(sorted), ptr<const int32_t>(order), ptr<const T>(dout), ptr<float>(dweight), n, v, c);
    ONN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace onn
