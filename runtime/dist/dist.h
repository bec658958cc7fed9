// How a process finds the other ranks of its run: the launcher's environment (mpirun, or
// srun --mpi=pmix) starts MPI, and CUDA ranks then open NCCL over it (the NCCL unique id is
// broadcast over MPI). A process no launcher started is one rank (local_communicator).
#pragma once

#include <memory>

#include "runtime/comm.h"
#include "runtime/device.h"

namespace onn::dist {

struct DistOptions {
  // A collective that has not completed after this many seconds ends every rank with one
  // line naming it (a rank that stopped or hangs), instead of waiting forever.
  double timeout_s = 600;
};

// MPI when a launcher started this process (mpirun -np 1 too: the collectives then run over
// one rank, which a one-rank NCCL run uses to check the path), else the local communicator. A
// launched run in a build without MPI, or ONN_WORLD_SIZE > 1 without an MPI launcher, is refused
// (InvalidArgument) rather than running N copies of one job into one folder.
std::unique_ptr<Communicator> make_communicator(const DistOptions& opt);

// For CUDA ranks: NCCL for device tensors on `device` (this rank's GPU), `host` (MPI) for host
// bytes and host tensors. Returns `host` unchanged when it is local, `device` is the CPU, or
// NCCL is not built (MPI then sums device tensors through host memory).
std::unique_ptr<Communicator> with_nccl(std::unique_ptr<Communicator> host, Device device, const DistOptions& opt);

// This rank's device for `requested` (the --device flag, resolved): a CUDA device given
// without an index (`index_given` false) becomes the GPU of the rank's local rank; anything
// else is kept.
Device rank_device(const Communicator& comm, Device requested, bool index_given);

}  // namespace onn::dist
