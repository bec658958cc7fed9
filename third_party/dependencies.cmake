# External dependencies, all from Debian packages (scripts/install-deps.sh). No copied sources:
# this file only finds them. Included from the top level so imported targets are visible everywhere.
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)

find_package(CLI11 2.1 CONFIG REQUIRED)

if(ONN_BUILD_TESTS)
  find_package(doctest 2.4 REQUIRED)
endif()
if(ONN_BUILD_BENCH)
  find_package(benchmark 1.6 REQUIRED)
endif()
