#!/usr/bin/env bash
# Streaming and MPI on the CPU, timed side by side in one run (medians of REPEATS, interleaved):
#   1. streaming within 20% of the in-memory path: `quarry score` and `quarry select -k 1000` over
#      an N x C float32 pool with the default budget (one chunk: the pool fits) against
#      --memory-budget BUDGET (many chunks);
#   2. 2 MPI ranks of one thread each within 15% of one rank with two threads (N = 2e7): the
#      shard merge must cost next to nothing. Both under mpirun --bind-to none.
# Each figure is the command's own time from opening the files to the output renamed (--verbose,
# rank 0), and the wall time of the whole command (process and MPI start included).
# Saved as bench/results/stream-<UTC time>-<commit>.json.
# Usage: BUILD=build REPEATS=5 N=20000000 C=10 BUDGET=64M bench/run_stream.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
q="$root/${BUILD:-build}/quarry"
repeats="${REPEATS:-5}"
n="${N:-20000000}"
c="${C:-10}"
budget="${BUDGET:-64M}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$q" generate -n "$n" -c "$c" --seed 1 -o "$work/p.npy"
cat "$work/p.npy" > /dev/null  # in the page cache, as for every run after the first

# run NAME COMMAND...: appends "own wall" seconds to $work/NAME
now() { date +%s.%N; }
run() {
  local name=$1; shift
  local t0 t1
  t0=$(now); "$@" --verbose 2> "$work/log" > /dev/null; t1=$(now)
  local own
  own=$(sed -n 's/.* in \([0-9.]*\) s (files opened.*/\1/p' "$work/log" | tail -1)
  [ -n "$own" ] || { cat "$work/log" >&2; exit 1; }
  echo "$own $(awk "BEGIN {print $t1 - $t0}")" >> "$work/$name"
}
mpi() { mpirun --oversubscribe --bind-to none -np "$@"; }
for r in $(seq "$repeats"); do
  run score_inmem "$q" score --input "$work/p.npy" -a entropy -o "$work/s1.npy"
  run score_stream "$q" score --input "$work/p.npy" -a entropy -o "$work/s2.npy" --memory-budget "$budget"
  run select_inmem "$q" select --input "$work/p.npy" -a entropy -k 1000 -o "$work/a1.csv"
  run select_stream "$q" select --input "$work/p.npy" -a entropy -k 1000 -o "$work/a2.csv" --memory-budget "$budget"
  run select_1x2 mpi 1 "$q" select --input "$work/p.npy" -a entropy -k 1000 --threads 2 -o "$work/b1.csv"
  run select_2x1 mpi 2 "$q" select --input "$work/p.npy" -a entropy -k 1000 --threads 1 -o "$work/b2.csv"
  run score_1x2 mpi 1 "$q" score --input "$work/p.npy" -a entropy --threads 2 -o "$work/t1.npy"
  run score_2x1 mpi 2 "$q" score --input "$work/p.npy" -a entropy --threads 1 -o "$work/t2.npy"
done
cmp "$work/s1.npy" "$work/s2.npy" && cmp "$work/a1.csv" "$work/a2.csv" && cmp "$work/b1.csv" "$work/b2.csv" &&
  cmp "$work/t1.npy" "$work/t2.npy" && cmp "$work/a1.csv" "$work/b1.csv"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
own() { cut -d' ' -f1 "$work/$1" | median; }
wall() { cut -d' ' -f2 "$work/$1" | median; }
col() { cut -d' ' -f"$2" "$work/$1" | paste -sd, -; }
ratio() { awk "BEGIN {printf \"%.3f\", $1 / $2}"; }
names="score_inmem score_stream select_inmem select_stream select_1x2 select_2x1 score_1x2 score_2x1"
stamp="$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$root" rev-parse --short HEAD)"
out="$root/bench/results/stream-$stamp.json"
mkdir -p "$root/bench/results"
{
  echo "{"
  echo "  \"benchmark\": \"streaming (--memory-budget $budget) against one chunk, and 2 MPI ranks x 1 thread against 1 rank x 2 threads; pool $n x $c float32, entropy, k = 1000\","
  echo "  \"commit\": \"$(git -C "$root" rev-parse HEAD)\","
  echo "  \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs\","
  echo "  \"mpi\": \"$(mpirun --version 2>&1 | head -1)\","
  echo "  \"repeats\": $repeats,"
  echo "  \"load_average_at_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  for x in $names; do
    echo "  \"${x}_own_seconds\": [$(col "$x" 1)], \"${x}_wall_seconds\": [$(col "$x" 2)],"
    echo "  \"${x}_median_own_seconds\": $(own "$x"), \"${x}_median_wall_seconds\": $(wall "$x"),"
  done
  echo "  \"ratio_score_stream_over_inmem_own\": $(ratio "$(own score_stream)" "$(own score_inmem)"),"
  echo "  \"ratio_select_stream_over_inmem_own\": $(ratio "$(own select_stream)" "$(own select_inmem)"),"
  echo "  \"ratio_select_2x1_over_1x2_own\": $(ratio "$(own select_2x1)" "$(own select_1x2)"),"
  echo "  \"ratio_select_2x1_over_1x2_wall\": $(ratio "$(wall select_2x1)" "$(wall select_1x2)"),"
  echo "  \"ratio_score_2x1_over_1x2_own\": $(ratio "$(own score_2x1)" "$(own score_1x2)"),"
  echo "  \"ratio_score_2x1_over_1x2_wall\": $(ratio "$(wall score_2x1)" "$(wall score_1x2)"),"
  echo "  \"goals\": {\"stream_over_inmem\": 1.20, \"mpi_2x1_over_1x2\": 1.15}"
  echo "}"
} > "$out"
cat "$out"
