// The CPU worker pool (runtime/parallel.h): a job is a part counter the workers and the caller
// draw from. Between jobs a worker spins for kSpin (pause instructions, an occasional yield)
// before it sleeps on a condition variable, and the caller spins as long for the last parts, so
// the back-to-back small kernels of a training step do not pay a futex wake-up and a context
// switch each.
#include "runtime/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace onn {

namespace {

thread_local bool in_part = false;

constexpr auto kSpin = std::chrono::microseconds(100);
// While spinning: kPauses pause instructions per check of the clock, and a yield to the
// scheduler every kYieldEvery checks (a few per spin, not one per check: on a VM each yield is a
// system call, and the demo spent a quarter of its samples in them).
constexpr int kPauses = 16, kYieldEvery = 32;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or kSpin has passed; whether done() became true.
template <typename F>
bool spin_until(F&& done) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int check = 1; !done(); ++check) {
    if (std::chrono::steady_clock::now() > until) return false;
    for (int i = 0; i < kPauses; ++i) cpu_relax();
    if (check % kYieldEvery == 0) std::this_thread::yield();
  }
  return true;
}

class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  void set_threads(int n) {
    std::lock_guard<std::mutex> run(run_mu_);
    threads_ = n > 0 ? n : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }
  int threads() const { return threads_; }

  void run(int64_t parts, const std::function<void(int64_t)>& part) {
    std::lock_guard<std::mutex> run(run_mu_);  // one job at a time
    const int helpers = std::min<int64_t>(threads_, parts) - 1;
    ensure_workers(helpers);
    {
      std::lock_guard<std::mutex> l(mu_);
      job_ = &part;
      parts_ = parts;
      next_.store(0);
      active_ = job_active_ = helpers;
      error_ = nullptr;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    work();
    if (!spin_until([&] { return active_.load() == 0; })) {
      std::unique_lock<std::mutex> l(mu_);
      done_.wait(l, [&] { return active_ == 0; });
    }
    std::lock_guard<std::mutex> l(mu_);
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  Pool() { set_threads(0); }

  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int index = static_cast<int>(workers_.size());
      workers_.emplace_back([this, index] { loop(index); });
    }
  }

  // Draws parts until none is left.
  void work() {
    in_part = true;
    for (int64_t p = next_.fetch_add(1); p < parts_; p = next_.fetch_add(1)) {
      try {
        (*job_)(p);
      } catch (...) {
        std::lock_guard<std::mutex> l(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
    in_part = false;
  }

  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      spin_until([&] { return generation_.load() != seen; });
      {
        std::unique_lock<std::mutex> l(mu_);
        // Only the first job_active_ workers join a job (the others sleep on).
        wake_.wait(l, [&] { return stop_ || (generation_ != seen && index < job_active_); });
        if (stop_) return;
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> l(mu_);
      if (--active_ == 0) done_.notify_all();
    }
  }

  std::mutex run_mu_, mu_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t parts_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> active_{0};
  int job_active_ = 0;
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::exception_ptr error_;
  std::atomic<int> threads_{1};  // read by cpu_threads() without the run lock
};

}  // namespace

void set_cpu_threads(int threads) { Pool::get().set_threads(threads); }
int cpu_threads() { return Pool::get().threads(); }

int64_t parallel_parts(int64_t n, int64_t grain) {
  if (n <= 0) return 0;
  const int64_t g = std::max<int64_t>(grain, 1);
  return (n + g - 1) / g;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t part, int64_t begin, int64_t end)>& fn) {
  const int64_t parts = parallel_parts(n, grain), size = std::max<int64_t>(grain, 1);
  const auto one = [&](int64_t p) { fn(p, p * size, std::min(n, (p + 1) * size)); };
  if (parts <= 1 || in_part || cpu_threads() <= 1) {
    for (int64_t p = 0; p < parts; ++p) one(p);
    return;
  }
  Pool::get().run(parts, one);
}

}  // namespace onn
