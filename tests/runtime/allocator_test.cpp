// The caching allocator's budget, reuse and statistics, on host memory standing in for a
// device (the same code runs over cudaMalloc); byte-size parsing and printing.
#include <doctest/doctest.h>

#include <string>

#include "runtime/allocator.h"
#include "runtime/error.h"
#include "runtime/tensor.h"

using namespace onn;

namespace {
constexpr size_t MiB = size_t{1} << 20;

// A backend with a fixed capacity, to exercise "the device itself is full".
class FixedBackend final : public RawBackend {
 public:
  explicit FixedBackend(size_t cap) : cap_(cap) {}
  void* raw_allocate(size_t bytes) override {
    if (used_ + bytes > cap_) return nullptr;
    used_ += bytes;
    return ::operator new(bytes);
  }
  void raw_free(void* p, size_t bytes) override {
    used_ -= bytes;
    ::operator delete(p);
  }
  Device device() const override { return Device::cpu(); }

 private:
  size_t cap_, used_ = 0;
};
}  // namespace

TEST_CASE("size classes") {
  CHECK(CachingAllocator::round_size(1) == 512);
  CHECK(CachingAllocator::round_size(512) == 512);
  CHECK(CachingAllocator::round_size(513) == 1024);
  CHECK(CachingAllocator::round_size(MiB) == 2 * MiB);
  CHECK(CachingAllocator::round_size(3 * MiB + 1) == 4 * MiB);
  CHECK_THROWS_AS(CachingAllocator::round_size(SIZE_MAX - 5), OutOfMemory);
}

TEST_CASE("a request over the budget throws OutOfMemory naming request, budget and use") {
  CachingAllocator a(make_host_raw_backend(), 4 * MiB);
  void* p = a.allocate(3 * MiB);
  CHECK(p != nullptr);
  try {
    a.allocate(2 * MiB);
    FAIL("no OutOfMemory");
  } catch (const OutOfMemory& e) {
    const std::string msg = e.what();
    CHECK(msg.find("request of 2.00 MiB") != std::string::npos);
    CHECK(msg.find("budget 4.00 MiB") != std::string::npos);
    CHECK(msg.find("in use 4.00 MiB") != std::string::npos);
  }
  const AllocatorStats s = a.stats();
  CHECK(s.oom_events == 1);
  CHECK(s.peak_reserved <= 4 * MiB);
  a.deallocate(p, 3 * MiB);
  CHECK(a.stats().in_use == 0);
}

TEST_CASE("freed blocks are reused and stats track use, reserve and peaks") {
  CachingAllocator a(make_host_raw_backend());
  void* p = a.allocate(1000);
  AllocatorStats s = a.stats();
  CHECK(s.in_use == 1024);
  CHECK(s.requested == 1000);
  CHECK(s.reserved == 1024);
  a.deallocate(p, 1000);
  s = a.stats();
  CHECK(s.in_use == 0);
  CHECK(s.reserved == 1024);  // cached, not returned
  void* q = a.allocate(900);  // same class (1024)
  CHECK(q == p);
  s = a.stats();
  CHECK(s.cache_hits == 1);
  CHECK(s.backend_allocs == 1);
  void* r = a.allocate(10 * MiB);
  CHECK(a.stats().peak_in_use == 1024 + 10 * MiB);
  a.deallocate(r, 10 * MiB);
  a.deallocate(q, 900);
  a.reset_peak();
  CHECK(a.stats().peak_in_use == 0);
  a.release_cache();
  s = a.stats();
  CHECK(s.reserved == 0);
  CHECK(s.backend_frees == 2);
}

TEST_CASE("a much larger cached block is not handed out for a small request") {
  CachingAllocator a(make_host_raw_backend());
  void* big = a.allocate(64 * MiB);
  a.deallocate(big, 64 * MiB);
  void* small = a.allocate(2 * MiB);
  CHECK(small != big);
  CHECK(a.stats().cache_hits == 0);
  a.deallocate(small, 2 * MiB);
}

TEST_CASE("the cache is released before the budget is declared exhausted") {
  CachingAllocator a(make_host_raw_backend(), 8 * MiB);
  void* p = a.allocate(4 * MiB);
  a.deallocate(p, 4 * MiB);
  void* q = a.allocate(6 * MiB);  // 4 cached + 6 > 8: cache must go first
  CHECK(q != nullptr);
  const AllocatorStats s = a.stats();
  CHECK(s.reserved == 6 * MiB);
  CHECK(s.peak_reserved <= 8 * MiB);
  a.deallocate(q, 6 * MiB);
}

TEST_CASE("a backend that runs dry gives OutOfMemory after freeing the cache") {
  CachingAllocator a(std::make_unique<FixedBackend>(8 * MiB));
  void* p = a.allocate(4 * MiB);
  a.deallocate(p, 4 * MiB);
  void* q = a.allocate(6 * MiB);  // needs the cached 4 MiB back
  CHECK(q != nullptr);
  CHECK_THROWS_WITH_AS(a.allocate(4 * MiB), doctest::Contains("the device has no memory left"), OutOfMemory);
  a.deallocate(q, 6 * MiB);
}

TEST_CASE("set_budget refuses less than what is in use and trims the cache") {
  CachingAllocator a(make_host_raw_backend());
  void* p = a.allocate(4 * MiB);
  void* q = a.allocate(4 * MiB);
  a.deallocate(q, 4 * MiB);
  CHECK_THROWS_AS(a.set_budget(2 * MiB), InvalidArgument);
  a.set_budget(6 * MiB);
  CHECK(a.stats().reserved == 4 * MiB);
  CHECK(a.budget() == 6 * MiB);
  a.deallocate(p, 4 * MiB);
}

TEST_CASE("tensors allocate through a caching allocator and return memory on destruction") {
  CachingAllocator a(make_host_raw_backend(), 16 * MiB);
  {
    Tensor t = Tensor::empty(Shape{1024, 1024}, DType::f32, a);  // 4 MiB
    CHECK(a.stats().in_use == 4 * MiB);
    Tensor view = t.slice(0, 10);
    t = Tensor();
    CHECK(a.stats().in_use == 4 * MiB);  // the view keeps the storage
  }
  CHECK(a.stats().in_use == 0);
  CHECK_THROWS_AS(Tensor::empty(Shape{1024, 1024, 5}, DType::f32, a), OutOfMemory);
}

TEST_CASE("cpu allocator alignment and zero-size requests") {
  void* p = cpu_allocator().allocate(3);
  CHECK(reinterpret_cast<uintptr_t>(p) % kCpuAlignment == 0);
  cpu_allocator().deallocate(p, 3);
  CHECK(cpu_allocator().allocate(0) == nullptr);
  void* q = pinned_allocator().allocate(100);  // falls back to host memory without a GPU
  CHECK(q != nullptr);
  pinned_allocator().deallocate(q, 100);
}

TEST_CASE("parse_bytes and format_bytes") {
  CHECK(parse_bytes("4GiB") == 4ull << 30);
  CHECK(parse_bytes("512MiB") == 512ull << 20);
  CHECK(parse_bytes("1.5GB") == 1500000000ull);
  CHECK(parse_bytes("100") == 100);
  CHECK(parse_bytes("2 g") == 2ull << 30);
  CHECK_THROWS_AS(parse_bytes("four"), InvalidArgument);
  CHECK_THROWS_AS(parse_bytes("4XB"), InvalidArgument);
  CHECK_THROWS_AS(parse_bytes(""), InvalidArgument);
  CHECK_THROWS_AS(parse_bytes("1.2.3G"), InvalidArgument);
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(3 * MiB / 2) == "1.50 MiB");
}

TEST_CASE("at the budget only the cached blocks a request needs are freed") {
  CachingAllocator a(make_host_raw_backend(), 16 * MiB);
  void* p2 = a.allocate(2 * MiB);
  void* p4 = a.allocate(4 * MiB);
  void* p6 = a.allocate(6 * MiB);
  a.deallocate(p2, 2 * MiB);
  a.deallocate(p4, 4 * MiB);
  a.deallocate(p6, 6 * MiB);  // 12 MiB cached
  // 12 + 8 > 16: 4 MiB short; the 4 MiB block covers it alone, so the others stay cached.
  void* q = a.allocate(8 * MiB);
  AllocatorStats s = a.stats();
  CHECK(s.backend_frees == 1);
  CHECK(s.reserved == 16 * MiB);
  const uint64_t hits = s.cache_hits;
  void* r2 = a.allocate(2 * MiB);
  void* r6 = a.allocate(6 * MiB);
  CHECK(r2 == p2);
  CHECK(r6 == p6);
  CHECK(a.stats().cache_hits == hits + 2);
  a.deallocate(r2, 2 * MiB);
  a.deallocate(r6, 6 * MiB);
  a.deallocate(q, 8 * MiB);
  // No single cached block covers 14 MiB short (8 + 6 + 2 cached, 16 reserved, request 14):
  // the largest go first, 8 then 6, and the 2 MiB block stays.
  void* big = a.allocate(14 * MiB);
  s = a.stats();
  CHECK(s.backend_frees == 3);
  CHECK(s.reserved == 16 * MiB);
  CHECK(s.peak_reserved <= 16 * MiB);
  CHECK(a.allocate(2 * MiB) == p2);
  a.deallocate(p2, 2 * MiB);
  a.deallocate(big, 14 * MiB);
}

TEST_CASE("at the budget a larger cached block is split, and its freed parts merge again") {
  CachingAllocator a(make_host_raw_backend(), 16 * MiB);
  void* big = a.allocate(12 * MiB);
  a.deallocate(big, 12 * MiB);
  void* other = a.allocate(4 * MiB);  // 12 + 4 fits: a block of its own, no split
  CHECK(other != big);
  a.deallocate(other, 4 * MiB);
  const AllocatorStats s0 = a.stats();
  CHECK(s0.reserved == 16 * MiB);
  // 6 MiB: no cached block within 1/8, and a new one would pass the budget: split the 12.
  void* x = a.allocate(6 * MiB);
  void* y = a.allocate(6 * MiB);  // the other half
  AllocatorStats s = a.stats();
  CHECK(x == big);
  CHECK(y == static_cast<char*>(big) + 6 * MiB);
  CHECK(s.splits == 1);
  CHECK(s.backend_allocs == s0.backend_allocs);
  CHECK(s.backend_frees == 0);
  CHECK(s.reserved == 16 * MiB);
  CHECK(s.in_use == 12 * MiB);
  // Freed in either order, the halves merge: the whole 12 MiB block serves a 12 MiB request.
  a.deallocate(y, 6 * MiB);
  a.deallocate(x, 6 * MiB);
  CHECK(a.stats().in_use == 0);
  void* whole = a.allocate(12 * MiB);
  CHECK(whole == big);
  CHECK(a.stats().backend_allocs == s0.backend_allocs);
  a.deallocate(whole, 12 * MiB);
  // A split block's segment goes back to the backend only whole: with 6 MiB of it in use, a
  // request larger than every cached block frees the 4 MiB segment and still cannot fit.
  void* half = a.allocate(6 * MiB);
  CHECK_THROWS_AS(a.allocate(14 * MiB), OutOfMemory);
  a.deallocate(half, 6 * MiB);
  void* all = a.allocate(16 * MiB);  // everything merged and free: released, then one block
  CHECK(all != nullptr);
  CHECK(a.stats().reserved == 16 * MiB);
  a.deallocate(all, 16 * MiB);
}
