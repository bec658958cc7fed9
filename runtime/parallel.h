// The CPU backend's worker threads. parallel_for splits [0, n) into parts whose size is fixed by
// n and `grain` alone, never by the thread count, and runs them on a persistent pool (the calling
// thread takes parts too). A kernel whose parts write disjoint outputs, and whose reductions
// combine per-part results in part order, gives the same bits with any number of threads.
#pragma once

#include <cstdint>
#include <functional>

namespace onn {

// Threads parallel_for uses (the caller included); 0: the cores available (the default).
void set_cpu_threads(int threads);
int cpu_threads();

// The parts of [0, n) of about `grain` items each (at least one item, at most n parts).
int64_t parallel_parts(int64_t n, int64_t grain);
// fn(part, begin, end) for every part of [0, n), each exactly once, on up to cpu_threads()
// threads; returns when all are done. A call from inside a part runs inline. An exception from
// a part is rethrown (the first one) after every part has finished.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t part, int64_t begin, int64_t end)>& fn);

}  // namespace onn
