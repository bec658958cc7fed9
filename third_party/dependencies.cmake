# External dependencies, all from Debian packages (scripts/install-deps.sh). No copied sources:
# this file only finds them. Included from the top level so imported targets are visible everywhere.
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)

find_package(CLI11 2.1 CONFIG REQUIRED)
# Tokenizer: PCRE2 (8-bit, Unicode properties) for tokenizer.json split regexes, utf8proc for
# NFC/NFKC. Neither ships a CMake package on Debian; pkg-config finds both.
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET GLOBAL libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET GLOBAL libutf8proc)

if(ONN_BUILD_TESTS)
  find_package(doctest 2.4 REQUIRED)
endif()
if(ONN_BUILD_BENCH)
  find_package(benchmark 1.6 REQUIRED)
endif()
# Distributed runs (runtime/dist): Debian's OpenMPI (libopenmpi-dev, openmpi-bin for mpirun).
if(NOT ONN_DISTRIBUTED STREQUAL "OFF")
  find_package(MPI COMPONENTS C QUIET)
endif()
# Parquet data (train/parquet_*): its page codecs.
find_package(Snappy CONFIG REQUIRED)
find_package(zstd CONFIG REQUIRED)
find_package(ZLIB REQUIRED)
# The CPU's bf16 GEMM (kernels/cpu/matmul_bf16.cpp): Debian's oneDNN (libdnnl-dev), built on
# OpenMP, whose thread count ONN holds to one per calling thread.
set(ONN_HAVE_ONEDNN OFF)
if(NOT ONN_ONEDNN STREQUAL "OFF")
  # Found by hand: Debian's dnnl-config.cmake insists on OpenCL's development files (its GPU
  # runtime), which the CPU engine ONN uses does not need.
  find_path(ONN_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
  find_library(ONN_DNNL_LIBRARY dnnl)
  find_package(OpenMP COMPONENTS CXX QUIET)
  if(ONN_DNNL_INCLUDE_DIR AND ONN_DNNL_LIBRARY AND OpenMP_CXX_FOUND)
    set(ONN_HAVE_ONEDNN ON)
  elseif(ONN_ONEDNN STREQUAL "ON")
    message(FATAL_ERROR "ONN_ONEDNN=ON but oneDNN (libdnnl-dev) or OpenMP was not found")
  endif()
endif()
message(STATUS "ONN: CPU bf16 GEMM (oneDNN) ${ONN_HAVE_ONEDNN} (ONN_ONEDNN=${ONN_ONEDNN})")
