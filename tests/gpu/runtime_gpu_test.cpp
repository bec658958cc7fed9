// The runtime on a CUDA device (label gpu): allocator budget and reuse over cudaMalloc,
// copies host <-> device, views on device, streams and events.
#include <doctest/doctest.h>

#include <cstring>
#include <random>

#include "runtime/allocator.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/stream.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("device allocator enforces its budget and reuses blocks") {
  constexpr size_t MiB = size_t{1} << 20;
  CachingAllocator a(make_cuda_raw_backend(0), 64 * MiB);
  void* p = a.allocate(40 * MiB);
  CHECK_THROWS_WITH_AS(a.allocate(30 * MiB), doctest::Contains("budget 64.00 MiB"), OutOfMemory);
  a.deallocate(p, 40 * MiB);
  void* q = a.allocate(39 * MiB);
  CHECK(q == p);
  const AllocatorStats s = a.stats();
  CHECK(s.peak_reserved <= 64 * MiB);
  CHECK(s.cache_hits == 1);
  a.deallocate(q, 39 * MiB);
  a.release_cache();
  CHECK(a.stats().reserved == 0);
}

TEST_CASE("tensor copies host -> device -> host, and device views") {
  std::mt19937 rng(1);
  const Tensor h = random_tensor(Shape{33, 65}, rng);
  Stream s(Device::cuda(0));
  const Tensor d = h.to(Device::cuda(0), &s);
  Tensor d2 = Tensor::empty(Shape{33, 65}, DType::f32, Device::cuda(0));
  d2.copy_from(d, &s);
  const Tensor back = d2.slice(10, 20).to(Device::cpu(), &s);
  s.synchronize();
  CHECK(std::memcmp(back.data(), h.slice(10, 20).data(), back.nbytes()) == 0);
  CHECK(d.str().find("device=cuda:0") != std::string::npos);
}

TEST_CASE("events order streams and time work") {
  Context ctx(Device::cuda(0));
  Event e0(ctx.device()), e1(ctx.device());
  Tensor big = Tensor::empty(Shape{64 << 20}, DType::u8, ctx.device());
  e0.record(ctx.copy());
  big.fill_bytes(7, &ctx.copy());
  e1.record(ctx.copy());
  ctx.compute().wait(e1);
  const Tensor host = big.slice(0, 16).to(Device::cpu(), &ctx.compute());
  ctx.compute().synchronize();
  CHECK(static_cast<const uint8_t*>(host.data())[15] == 7);
  CHECK(e1.ready());
  CHECK(Event::elapsed_ms(e0, e1) >= 0.0f);
}

TEST_CASE("pinned host memory is pinned when a GPU exists") {
  CHECK(pinned_allocator().pinned());
  void* p = pinned_allocator().allocate(1 << 20);
  CHECK(p != nullptr);
  pinned_allocator().deallocate(p, 1 << 20);
}

TEST_CASE("a rehearsal is refused on a CUDA context") {
  // A rehearsal computes nothing; on a real device it would hand out meaningless tensors.
  Context ctx(Device::cuda(0));
  CHECK_THROWS_WITH_AS(ctx.start_rehearsal(), doctest::Contains("a rehearsal runs on a CPU context"),
                       InvalidArgument);
  CHECK_FALSE(ctx.rehearsal());
}
