#!/usr/bin/env bash
# Trains from a data file larger than the memory the process may use: onn-train runs in a
# cgroup whose memory limit (page cache included) is below the file's size. Needs root and a
# cgroup v1 memory controller or cgroup v2. Usage:
#   scripts/larger-than-ram.sh [LIMIT_MIB] [DATA_MIB] [FORMAT]   (defaults 400 1024 jsonl)
# FORMAT jsonl writes the file with awk; parquet writes it with pyarrow (PYTHON=/path/to/python).
set -euo pipefail
limit_mib=${1:-400}
data_mib=${2:-1024}
format=${3:-jsonl}
root=$(cd "$(dirname "$0")/.." && pwd)
train=${ONN_TRAIN:-$root/build/dev/tools/onn-train}
work=${WORK:-/tmp/onn-larger-than-ram}
mkdir -p "$work"
data=$work/data.$format
rows=$((data_mib * 512))  # about 2 KiB a row
if [ ! -s "$data" ]; then
  if [ "$format" = parquet ]; then
    "${PYTHON:-python3}" - "$data" "$rows" <<'PY'
import random, sys
import pyarrow as pa, pyarrow.parquet as pq
words = "the quick brown fox jumps over a lazy dog while seven wizards hex jolly boxing frogs".split()
path, rows = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
with pq.ParquetWriter(path, pa.schema([("text", pa.string())]), compression="zstd") as w:
    for start in range(0, rows, 20000):
        n = min(20000, rows - start)
        w.write_table(pa.table({"text": [" ".join(rng.choice(words) for _ in range(400)) for _ in range(n)]}))
PY
  else
    awk -v rows="$rows" 'BEGIN {
      srand(1); split("the quick brown fox jumps over a lazy dog while seven wizards hex jolly boxing frogs", w, " ")
      for (r = 0; r < rows; r++) { line = w[int(rand() * 16) + 1]
        for (i = 1; i < 400; i++) line = line " " w[int(rand() * 16) + 1]
        printf "{\"text\": \"%s\"}\n", line } }' > "$data"
  fi
fi
echo "data: $data, $(du -m "$data" | cut -f1) MiB on disk; memory limit: $limit_mib MiB (page cache included)"
limit=$((limit_mib << 20))
if [ -d /sys/fs/cgroup/memory ]; then
  cg=/sys/fs/cgroup/memory/onn-larger-than-ram
  mkdir -p "$cg"
  echo "$limit" > "$cg/memory.limit_in_bytes"
  [ -e "$cg/memory.memsw.limit_in_bytes" ] && echo "$limit" > "$cg/memory.memsw.limit_in_bytes"
  echo 0 > "$cg/memory.max_usage_in_bytes"
  peak_file=$cg/memory.max_usage_in_bytes
else
  cg=/sys/fs/cgroup/onn-larger-than-ram
  mkdir -p "$cg"
  echo "$limit" > "$cg/memory.max"
  echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
  peak_file=$cg/memory.peak
fi
rm -rf "$work/run"
start=$(date +%s)
set +e
sh -c "echo \$\$ > $cg/cgroup.procs && exec \"$train\" --model \"$root/tests/data/models/llama_gqa\" --data \"$data\" \
  --out \"$work/run\" --device cpu --steps 2 --seq-len 128 --val-split 0 --log-file \"$work/run.log\""
rc=$?
set -e
echo "onn-train exit $rc after $(( $(date +%s) - start )) s; cgroup peak $(( $(cat "$peak_file") >> 20 )) MiB"
[ -d "$work/run/data" ] && du -m "$work/run/data"/* || true
exit $rc
