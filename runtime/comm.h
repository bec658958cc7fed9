// Communicator: the ranks of a data-parallel run and the collectives the trainer needs (a sum
// of gradients, an exchange of host bytes, a barrier). This header names no transport: the
// backends (MPI for CPU ranks and as the launcher's bootstrap, NCCL for CUDA ranks) live in
// runtime/dist/ (library onn_dist, built with -DONN_DISTRIBUTED), so onn::runtime stays free of
// MPI and an embedding engine can pass its own implementation.
//
// Every collective is called by every rank in the same order. all_reduce_sum gives every rank
// the same bits; where the backend can fix the order (MPI) the sum is a left fold in rank
// order, ((r0 + r1) + r2) + ..., so it does not depend on timing either.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/tensor.h"

namespace onn {

enum class CommBackend { local, mpi, nccl };
const char* comm_backend_name(CommBackend b);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual CommBackend backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // This rank among those on its node (which GPU it takes), and how many share the node.
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;

  // Each tensor (F32, F64 or BF16, contiguous, on ctx's device) replaced by its sum over the
  // ranks. Device tensors are summed in ctx's compute-stream order.
  virtual void all_reduce_sum(Context& ctx, const std::vector<Tensor>& tensors) = 0;
  // all_reduce_sum in two halves, so that the sum overlaps work that does not touch the
  // tensors (the backward of the layers below theirs): start_all_reduce_sum takes tensors whose
  // values are final in ctx's compute-stream order and may return before they are summed;
  // finish_all_reduce returns once every started sum is in place (in compute-stream order on a
  // device). Between the two the caller neither reads nor writes those tensors and calls no
  // other collective. The bits are all_reduce_sum's whatever the split into calls where the
  // backend fixes the order (MPI). The default sums at once.
  virtual void start_all_reduce_sum(Context& ctx, const std::vector<Tensor>& tensors) { all_reduce_sum(ctx, tensors); }
  virtual void finish_all_reduce(Context&) {}
  // Every rank's bytes, in rank order, on every rank.
  virtual std::vector<std::string> all_gather(const std::string& mine) = 0;
  // Root's bytes on every rank.
  virtual void broadcast(std::string& bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the run now with exit code `code` (a rank that failed alone: the others
  // would wait for it in their next collective).
  [[noreturn]] virtual void abort(int code) = 0;

  bool lead() const { return rank() == 0; }
};

// One process, no peers: every collective is the identity.
std::unique_ptr<Communicator> local_communicator();

// A refusal every rank of a run reached together (a configuration or data that differs
// between ranks): the tools print it once, on rank 0, and every rank exits 2.
class RanksDisagree : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

// The values of every rank, concatenated in rank order, summed from 0 in that order: the bits
// one process summing them all gets (on every rank).
double sum_in_rank_order(Communicator& comm, const std::vector<double>& mine);

// Every rank's `fields` (name -> value, the same names in the same order on every rank)
// compared with rank 0's; RanksDisagree on every rank naming the first rank and field that
// differ and both values. `what` says what the fields describe ("configuration", "data").
void check_same_on_all_ranks(Communicator& comm, const std::vector<std::pair<std::string, std::string>>& fields,
                             const std::string& what);

}  // namespace onn
