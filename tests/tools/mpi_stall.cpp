// A rank that joins the MPI world and then never calls a collective (for the --comm-timeout
// test): mpi_stall SECONDS.
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>
#include <unistd.h>

#include <cstdlib>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::sleep(argc > 1 ? static_cast<unsigned>(std::atoi(argv[1])) : 60u);
  MPI_Finalize();
  return 0;
}
