# Sourced by gpu-verify.sh and gpu-stream.sh on the GPU machine: unpacks the carried
# build/gpu-carry.tar.xz (scripts/gpu-bundle.sh), sets $c (the binaries), $out (results: $OUT,
# or gpu-results/) and the library and test-data paths, and defines `step`, which runs one
# command bounded by T seconds (default 300) and prints its exit status and duration.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
c=build/gpu-carry
[ -f build/gpu-carry.tar.xz ] && tar -C build -xJf build/gpu-carry.tar.xz
out=${OUT:-gpu-results}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/$c/lib:${LD_LIBRARY_PATH:-}"
export ONN_TEST_DATA_DIR="$PWD/tests/data"  # the carried binaries were built in another checkout
step() { echo "== $*"; local t0=$SECONDS; timeout "${T:-300}" "$@"; echo "== exit $? ($((SECONDS - t0)) s)"; }
