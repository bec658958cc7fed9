// Allocators: aligned CPU memory, pinned host memory, and the caching allocator with a hard
// byte budget that every device allocation goes through. The caching allocator sits on a
// RawBackend (cudaMalloc on CUDA; aligned host memory for the CPU-simulated device that
// tests and the low-VRAM scheduler use), so its budget logic is the same on both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/device.h"

namespace onn {

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Never returns nullptr for bytes > 0; throws OutOfMemory instead. bytes == 0 may return
  // nullptr.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
};

inline constexpr size_t kCpuAlignment = 64;

// 64-byte aligned host memory (operator new with alignment).
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "cpu"; }
};

// Page-locked host memory for overlapped copies. Falls back to CpuAllocator memory when no
// CUDA device exists (pinned() then says false), so host code paths stay the same.
class PinnedHostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "pinned"; }
  bool pinned() const;
};

// Where the caching allocator gets and returns memory. allocate returns nullptr when the
// backing store is exhausted (the caller frees its cache and retries).
class RawBackend {
 public:
  virtual ~RawBackend() = default;
  virtual void* raw_allocate(size_t bytes) = 0;
  virtual void raw_free(void* ptr, size_t bytes) = 0;
  virtual Device device() const = 0;
};

std::unique_ptr<RawBackend> make_cuda_raw_backend(int device);
// Host memory standing in for a device (CPU backend, tests): behaves like a device whose
// memory is exactly the budget.
std::unique_ptr<RawBackend> make_host_raw_backend();

struct AllocatorStats {
  size_t in_use = 0;          // bytes in blocks handed out (rounded sizes)
  size_t requested = 0;       // bytes asked for by live allocations
  size_t reserved = 0;        // bytes obtained from the backend (in use + cached)
  size_t peak_in_use = 0;
  size_t peak_reserved = 0;
  size_t budget = 0;          // 0 = unlimited
  uint64_t allocations = 0;   // allocate() calls that returned a block
  uint64_t cache_hits = 0;    // ... of which were served from the cache
  uint64_t splits = 0;        // ... by splitting a larger cached block (at the budget)
  uint64_t backend_allocs = 0;
  uint64_t backend_frees = 0;
  double backend_ms = 0;      // host time in the backend's allocate and free (cudaFree waits for the device)
  uint64_t oom_events = 0;
};

// Size classes: requests round up to 512 bytes below 1 MiB and to 2 MiB above, so a block
// freed by one layer is reused by the next layer of the same shape. A cached block serves a
// request when it is at most 1/8 larger (rounded class) than needed. Reserved memory never
// exceeds the budget. At the budget a request no cached block fits within 1/8 is carved out
// of a larger cached block (split; freed neighbours within one backend allocation merge
// again), since every backend free synchronises the device. Only when no cached block is
// large enough are wholly free backend allocations returned, only as many as the request
// needs (the smallest single one that covers the shortfall, else the largest first); if that
// is not enough the request fails with OutOfMemory naming the request, the budget and what
// is in use. "Returns every cached block" below means every wholly free backend allocation.
//
// A freed block is reusable at once by any stream: free device memory only after the work
// using it is ordered before later users (same stream, or an event).
class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawBackend> backend, size_t budget_bytes = 0);
  ~CachingAllocator() override;

  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  Device device() const override;
  std::string name() const override;

  // 0 = unlimited. Lowering the budget below what is reserved releases the cache; it throws
  // InvalidArgument if the memory in use alone exceeds the new budget.
  void set_budget(size_t budget_bytes);
  size_t budget() const;
  AllocatorStats stats() const;
  void reset_peak();
  // Returns every cached (free) block to the backend.
  void release_cache();

  static size_t round_size(size_t bytes);

 private:
  struct Block {
    size_t size = 0;          // a size class, or the rest of a split one
    size_t requested = 0;     // while handed out
    bool free = true;
    char* segment = nullptr;  // the backend allocation the block is part of
  };
  // Hands out block b, split to `size` when larger (the rest stays cached).
  void* take_locked(std::map<char*, Block>::iterator b, size_t size, size_t requested);
  void erase_free_locked(char* p, size_t size);
  void release_segment_locked(char* base);  // a wholly free segment, back to the backend
  void release_cache_locked();              // every wholly free segment

  mutable std::mutex mu_;
  std::unique_ptr<RawBackend> backend_;
  std::map<char*, Block> blocks_;             // every block, by address
  std::multimap<size_t, char*> free_blocks_;  // the free ones, by size
  std::map<char*, size_t> segments_;          // backend allocations: base -> bytes
  AllocatorStats stats_;
};

// The process-wide allocators. device_allocator(cuda:N) is a CachingAllocator over
// cudaMalloc; device_allocator(cpu) is the CpuAllocator.
Allocator& cpu_allocator();
PinnedHostAllocator& pinned_allocator();
Allocator& allocator_for(Device d);
CachingAllocator& cuda_caching_allocator(int device);

// "1.50 GiB", "512 B": for messages.
std::string format_bytes(size_t bytes);
// "4GiB", "512MiB", "1.5GB", "1000000": throws InvalidArgument on anything else.
size_t parse_bytes(const std::string& s);

}  // namespace onn
