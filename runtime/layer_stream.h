// The layer-streaming pipeline: chunks of host tensors (pinned on CUDA) copied one chunk at a
// time into two device buffers on the context's copy stream while the compute stream works on
// the other buffer, ordered by events. The caller declares the order in which it will visit
// the chunks (forward layers, LM-head slices, the backward's reverse order); acquiring one
// starts the copy of the next in that order, so a copy always overlaps the compute before it.
//
//   copy stream:    [copy c1 -> buf B]          [copy c2 -> buf A]      ...
//   compute stream:          [compute c0 on A]          [compute c1 on B]   ...
//
// A buffer is refilled only after the compute stream has released its chunk (event), and the
// compute stream reads a chunk only after its copy has finished (event).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/context.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace onn {

struct StreamStats {
  uint64_t bytes = 0;     // host to device
  uint64_t copies = 0;    // chunks copied
  double copy_ms = 0;     // the copies' own time (events on the copy stream)
  double compute_ms = 0;  // compute-stream time between acquiring and releasing chunks
};

class ChunkStreamer {
 public:
  // chunks[i]: the host tensors of chunk i. Both device buffers hold the largest chunk (each
  // tensor 256-byte aligned) and come from ctx.allocator(), so they count against its budget.
  ChunkStreamer(Context& ctx, std::vector<std::vector<Tensor>> chunks);
  ~ChunkStreamer();
  ChunkStreamer(const ChunkStreamer&) = delete;
  ChunkStreamer& operator=(const ChunkStreamer&) = delete;

  size_t chunks() const { return chunks_.size(); }
  size_t buffer_bytes() const { return buffer_bytes_; }
  // Bytes of one chunk's tensors.
  uint64_t chunk_bytes(size_t i) const;

  // The visiting order for the following acquire calls (a chunk may repeat; a chunk that is
  // still in a buffer is not copied again). Starts the first copy.
  void plan(std::vector<size_t> order);
  // The next chunk of the order: device views of its tensors, in order. Later work on the
  // compute stream waits for its copy; the copy of the chunk after it starts now.
  const std::vector<Tensor>& acquire(size_t chunk);
  // Work enqueued on the compute stream so far is the last to read the chunk acquired last.
  void release();

  StreamStats stats();  // waits for the copies issued so far
  void reset_stats();

 private:
  struct Slot {
    Tensor buffer;
    int64_t chunk = -1;
    std::vector<Tensor> views;
    Event ready, freed;
    bool freed_recorded = false;
    bool in_use = false;
  };
  void load(size_t chunk, Slot& slot);
  Slot* find(size_t chunk);

  Context& ctx_;
  std::vector<std::vector<Tensor>> chunks_;
  size_t buffer_bytes_ = 0;
  Slot slots_[2];
  int current_ = -1;  // the slot acquired last
  std::vector<size_t> order_;
  size_t pos_ = 0;
  std::vector<std::pair<Event, Event>> timings_, compute_timings_;
  Event compute_start_;
  StreamStats stats_;
};

}  // namespace onn
