#include "runtime/dist/dist.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "runtime/error.h"

namespace onn::dist {

#if ONN_HAVE_MPI
std::unique_ptr<Communicator> make_mpi_communicator(const DistOptions& opt);  // mpi_comm.cpp
#endif
#if ONN_HAVE_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, Device device,
                                                     const DistOptions& opt);  // nccl_comm.cpp
#endif

namespace {

int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  ONN_CHECK_ARG(end != v && *end == '\0' && n >= 0 && n < (1 << 20), "environment variable ", name, "=", v,
                " is not a rank count");
  return static_cast<int>(n);
}

// The world a launcher that starts MPI ranks announces: OpenMPI's mpirun, MPICH's and Intel's
// (PMI), SLURM's srun --mpi=pmix (PMIX_RANK, its size in SLURM_NTASKS). 0: none.
int mpi_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const int n = env_int(name); n > 0) return n;
  if (std::getenv("PMIX_RANK") != nullptr) return std::max(1, env_int("SLURM_NTASKS"));
  return 0;
}

}  // namespace

std::unique_ptr<Communicator> make_communicator(const DistOptions& opt) {
  ONN_CHECK_ARG(opt.timeout_s > 0, "--comm-timeout must be positive");
  const int mpi = mpi_world_size();
  if (mpi == 0) {
    const int onn_world = env_int("ONN_WORLD_SIZE");
    ONN_CHECK_ARG(onn_world <= 1, "ONN_WORLD_SIZE=", onn_world,
                  " but no MPI launcher started this process: start the ranks with mpirun -np N or srun --mpi=pmix "
                  "(ONN's ranks find each other through MPI; there is no ONN_MASTER_ADDR rendezvous)");
    return local_communicator();
  }
#if ONN_HAVE_MPI
  return make_mpi_communicator(opt);
#else
  throw InvalidArgument("a launcher started " + std::to_string(mpi) +
                        " ranks, but this ONN was built without MPI (-DONN_DISTRIBUTED=OFF, or libopenmpi-dev was "
                        "missing): every rank would run the whole job alone; rebuild with libopenmpi-dev installed");
#endif
}

std::unique_ptr<Communicator> with_nccl(std::unique_ptr<Communicator> host, Device device, const DistOptions& opt) {
  if (host->backend() == CommBackend::local || !device.is_cuda()) return host;
#if ONN_HAVE_NCCL
  return make_nccl_communicator(std::move(host), device, opt);
#else
  (void)opt;
  return host;  // MPI sums device tensors through host memory
#endif
}

Device rank_device(const Communicator& comm, Device requested, bool index_given) {
  if (!requested.is_cuda() || index_given || comm.backend() == CommBackend::local) return requested;
  return Device::cuda(comm.local_rank() % cuda_device_count());
}

}  // namespace onn::dist
