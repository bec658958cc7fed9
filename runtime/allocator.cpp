// Allocator implementations and the process-wide allocator registry.
#include "runtime/allocator.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <new>
#include <vector>

#include <sys/mman.h>

#include "runtime/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/host_span.h"

namespace onn {

namespace {
// Host allocations from kHugeMin up are 2 MiB aligned and advised for transparent huge pages
// (where THP is "madvise", the common default, nothing else gets them): a decode step reads
// every weight once, and it ran faster on huge pages (tinyllama-shaped bf16 decode, five
// alternating pairs: 7.9 -> 8.9 tok/s on average, docs/design.md). Advice only: where THP is
// off the pages stay small.
constexpr size_t kHugePage = size_t{2} << 20, kHugeMin = size_t{16} << 20;
bool huge(size_t bytes) { return bytes >= kHugeMin; }
}  // namespace

void* CpuAllocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = ::operator new(bytes, std::align_val_t(huge(bytes) ? kHugePage : kCpuAlignment), std::nothrow);
  if (p == nullptr) {
    throw OutOfMemory("host allocation of " + format_bytes(bytes) + " failed");
  }
  if (huge(bytes)) ::madvise(p, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);  // failure is harmless
  return p;
}

void CpuAllocator::deallocate(void* ptr, size_t bytes) {
  if (ptr != nullptr) ::operator delete(ptr, std::align_val_t(huge(bytes) ? kHugePage : kCpuAlignment));
}

bool PinnedHostAllocator::pinned() const { return cuda::device_count() > 0; }

void* PinnedHostAllocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (!pinned()) return cpu_allocator().allocate(bytes);
  const HostSpan span("pinned_malloc", bytes);
  return cuda::host_malloc_pinned(bytes);
}

void PinnedHostAllocator::deallocate(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  if (!pinned()) {
    cpu_allocator().deallocate(ptr, bytes);
    return;
  }
  const HostSpan span("pinned_free", bytes);
  cuda::host_free_pinned(ptr);
}

namespace {

class CudaRawBackend final : public RawBackend {
 public:
  explicit CudaRawBackend(int dev) : dev_(dev) {}
  void* raw_allocate(size_t bytes) override { return cuda::device_malloc(dev_, bytes); }
  void raw_free(void* ptr, size_t) override { cuda::device_free(dev_, ptr); }
  Device device() const override { return Device::cuda(dev_); }

 private:
  int dev_;
};

class HostRawBackend final : public RawBackend {
 public:
  void* raw_allocate(size_t bytes) override {
    return ::operator new(bytes, std::align_val_t(256), std::nothrow);
  }
  void raw_free(void* ptr, size_t) override { ::operator delete(ptr, std::align_val_t(256)); }
  Device device() const override { return Device::cpu(); }
};

constexpr size_t kSmallLimit = size_t{1} << 20;
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t{2} << 20;

size_t round_up(size_t v, size_t m) {
  if (v > SIZE_MAX - (m - 1)) throw OutOfMemory("allocation of " + std::to_string(v) + " bytes is too large");
  return (v + m - 1) / m * m;
}

}  // namespace

std::unique_ptr<RawBackend> make_cuda_raw_backend(int device) {
  return std::make_unique<CudaRawBackend>(device);
}
std::unique_ptr<RawBackend> make_host_raw_backend() { return std::make_unique<HostRawBackend>(); }

CachingAllocator::CachingAllocator(std::unique_ptr<RawBackend> backend, size_t budget_bytes)
    : backend_(std::move(backend)) {
  stats_.budget = budget_bytes;
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  // Live blocks at exit belong to tensors that outlive the allocator (static teardown); they
  // are left to the driver, which reclaims everything at process exit.
  try {
    release_cache_locked();
  } catch (...) {
  }
}

size_t CachingAllocator::round_size(size_t bytes) {
  if (bytes == 0) return kSmallRound;
  return bytes < kSmallLimit ? round_up(bytes, kSmallRound) : round_up(bytes, kLargeRound);
}

Device CachingAllocator::device() const { return backend_->device(); }
std::string CachingAllocator::name() const { return "caching(" + device().str() + ")"; }

void* CachingAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);

  // Best fit among cached blocks, accepting at most 1/8 slack.
  auto it = free_blocks_.lower_bound(size);
  if (it != free_blocks_.end() && it->first - size <= size / 8) {
    ++stats_.cache_hits;
    return take_locked(blocks_.find(it->second), it->first, bytes);
  }

  auto over_budget = [&] { return stats_.budget != 0 && stats_.reserved + size > stats_.budget; };
  auto fail = [&](const char* why) -> void* {
    ++stats_.oom_events;
    throw OutOfMemory("out of memory on " + device().str() + ": request of " + format_bytes(bytes) +
                      " (block " + format_bytes(size) + ") " + why + "; budget " +
                      (stats_.budget ? format_bytes(stats_.budget) : std::string("unlimited")) +
                      ", in use " + format_bytes(stats_.in_use) + ", reserved " +
                      format_bytes(stats_.reserved));
  };
  // At the budget a larger cached block is split rather than a segment freed: each backend
  // free waits for the whole device (cudaFree), which drains the streaming pipeline.
  if (over_budget() && it != free_blocks_.end()) {
    ++stats_.cache_hits;
    ++stats_.splits;
    return take_locked(blocks_.find(it->second), size, bytes);
  }
  // Return only as many wholly free segments as the request needs: the smallest single one
  // that covers the shortfall, else the largest first.
  while (over_budget()) {
    const size_t deficit = stats_.reserved + size - stats_.budget;
    char *best = nullptr, *largest = nullptr;
    size_t best_size = 0, largest_size = 0;
    for (const auto& [base, seg] : segments_) {
      const Block& b = blocks_.at(base);
      if (!b.free || b.size != seg) continue;
      if (seg >= deficit && (best == nullptr || seg < best_size)) best = base, best_size = seg;
      if (seg > largest_size) largest = base, largest_size = seg;
    }
    char* victim = best != nullptr ? best : largest;
    if (victim == nullptr) break;
    release_segment_locked(victim);
  }
  if (over_budget()) return fail("would exceed the budget");

  const auto t0 = std::chrono::steady_clock::now();
  const auto raw_allocate = [&] {
    const HostSpan span("device_malloc", size);
    return backend_->raw_allocate(size);
  };
  void* p = raw_allocate();
  if (p == nullptr) {
    release_cache_locked();
    p = raw_allocate();
    if (p == nullptr) return fail("failed: the device has no memory left");
  }
  ++stats_.backend_allocs;
  stats_.backend_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  stats_.reserved += size;
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
  char* base = static_cast<char*>(p);
  segments_.emplace(base, size);
  blocks_.emplace(base, Block{size, 0, true, base});
  free_blocks_.emplace(size, base);
  return take_locked(blocks_.find(base), size, bytes);
}

void* CachingAllocator::take_locked(std::map<char*, Block>::iterator b, size_t size, size_t requested) {
  char* p = b->first;
  Block& blk = b->second;
  erase_free_locked(p, blk.size);
  if (blk.size > size) {  // the rest stays cached, part of the same segment
    const size_t rest = blk.size - size;
    blocks_.emplace(p + size, Block{rest, 0, true, blk.segment});
    free_blocks_.emplace(rest, p + size);
    blk.size = size;
  }
  blk.free = false;
  blk.requested = requested;
  stats_.in_use += blk.size;
  stats_.requested += requested;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  ++stats_.allocations;
  return p;
}

void CachingAllocator::erase_free_locked(char* p, size_t size) {
  auto [lo, hi] = free_blocks_.equal_range(size);
  for (auto it = lo; it != hi; ++it) {
    if (it->second == p) {
      free_blocks_.erase(it);
      return;
    }
  }
  ONN_ASSERT(false, "caching allocator: a free block is missing from the size index");
}

void CachingAllocator::deallocate(void* ptr, size_t) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto b = blocks_.find(static_cast<char*>(ptr));
  ONN_ASSERT(b != blocks_.end() && !b->second.free, "deallocate of a pointer this allocator did not hand out");
  stats_.in_use -= b->second.size;
  stats_.requested -= b->second.requested;
  b->second.free = true;
  b->second.requested = 0;
  // Merge with free neighbours of the same segment, so split blocks become whole again.
  const auto mergeable = [](const std::pair<char* const, Block>& a, const std::pair<char* const, Block>& c) {
    return a.second.free && c.second.free && a.second.segment == c.second.segment && a.first + a.second.size == c.first;
  };
  if (auto next = std::next(b); next != blocks_.end() && mergeable(*b, *next)) {
    erase_free_locked(next->first, next->second.size);
    b->second.size += next->second.size;
    blocks_.erase(next);
  }
  if (b != blocks_.begin()) {
    if (auto prev = std::prev(b); mergeable(*prev, *b)) {
      erase_free_locked(prev->first, prev->second.size);
      prev->second.size += b->second.size;
      blocks_.erase(b);
      b = prev;
    }
  }
  free_blocks_.emplace(b->second.size, b->first);
}

void CachingAllocator::release_segment_locked(char* base) {
  const size_t size = segments_.at(base);
  auto b = blocks_.find(base);
  ONN_ASSERT(b != blocks_.end() && b->second.free && b->second.size == size, "releasing a segment still in use");
  erase_free_locked(base, size);
  blocks_.erase(b);
  segments_.erase(base);
  const auto t0 = std::chrono::steady_clock::now();
  {
    const HostSpan span("device_free", size);
    backend_->raw_free(base, size);
  }
  stats_.backend_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  stats_.reserved -= size;
  ++stats_.backend_frees;
}

void CachingAllocator::release_cache_locked() {
  std::vector<char*> whole;
  for (const auto& [base, seg] : segments_) {
    const Block& b = blocks_.at(base);
    if (b.free && b.size == seg) whole.push_back(base);
  }
  for (char* base : whole) release_segment_locked(base);
}

void CachingAllocator::release_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cache_locked();
}

void CachingAllocator::set_budget(size_t budget_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (budget_bytes != 0 && stats_.in_use > budget_bytes) {
    throw InvalidArgument("cannot set the " + device().str() + " budget to " + format_bytes(budget_bytes) +
                          ": " + format_bytes(stats_.in_use) + " is already in use");
  }
  stats_.budget = budget_bytes;
  if (budget_bytes != 0 && stats_.reserved > budget_bytes) release_cache_locked();
}

size_t CachingAllocator::budget() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_.budget;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_in_use = stats_.in_use;
  stats_.peak_reserved = stats_.reserved;
}

Allocator& cpu_allocator() {
  static CpuAllocator a;
  return a;
}

PinnedHostAllocator& pinned_allocator() {
  static PinnedHostAllocator a;
  return a;
}

CachingAllocator& cuda_caching_allocator(int device) {
  static std::mutex mu;
  // Leaked on purpose: tensors in static storage may be freed after any static allocator
  // would have been destroyed.
  static auto* allocators = new std::vector<std::unique_ptr<CachingAllocator>>();
  std::lock_guard<std::mutex> lock(mu);
  const int n = cuda::device_count();
  if (device < 0 || device >= n) {
    throw InvalidArgument("no CUDA device cuda:" + std::to_string(device) + " (" + std::to_string(n) +
                          " device(s) present)");
  }
  if (allocators->empty()) allocators->resize(static_cast<size_t>(n));
  auto& slot = (*allocators)[static_cast<size_t>(device)];
  if (!slot) slot = std::make_unique<CachingAllocator>(make_cuda_raw_backend(device));
  return *slot;
}

Allocator& allocator_for(Device d) {
  return d.is_cpu() ? cpu_allocator() : static_cast<Allocator&>(cuda_caching_allocator(d.index));
}

std::string format_bytes(size_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

size_t parse_bytes(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  const std::string num = s.substr(0, i);
  std::string unit = s.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  auto bad = [&]() -> size_t {
    throw InvalidArgument("invalid size \"" + s + "\" (expected e.g. 4GiB, 512MiB, 1.5GB or a byte count)");
  };
  if (num.empty() || std::count(num.begin(), num.end(), '.') > 1) return bad();
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double mult = 0;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "k" || unit == "kib") mult = 1024.0;
  else if (unit == "m" || unit == "mib") mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "gib") mult = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tib") mult = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "kb") mult = 1e3;
  else if (unit == "mb") mult = 1e6;
  else if (unit == "gb") mult = 1e9;
  else if (unit == "tb") mult = 1e12;
  else return bad();
  const double v = std::stod(num) * mult;
  if (!std::isfinite(v) || v >= 1.8e19) return bad();
  return static_cast<size_t>(std::llround(v));
}

}  // namespace onn
