#!/usr/bin/env bash
# The labeling project's goals, timed end to end as a user runs them (process start included):
#   `quarry project next` on a 100,000-item pool with the mlp model on the CPU (goal < 30 s):
#     retrain on the labels, infer on the pool, score, select 100;
#   `quarry project label` of a 10,000-row CSV (goal < 1 s): validate, append, fsync.
# The pool: 100k rows of 64 features from `quarry generate` (pool:X.npy, unlabeled). Each repeat
# labels the previous batch first, so every `next` retrains. Medians of REPEATS runs are saved
# as bench/results/project-<UTC time>-<commit>.json.
# Usage: BUILD=build REPEATS=5 THREADS=0 N=100000 bench/run_project.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
q="$root/${BUILD:-build}/quarry"
repeats="${REPEATS:-5}"
threads="${THREADS:-0}"
n="${N:-100000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
"$q" generate -n "$n" -c 3 -d 64 -o "$work/probs.npy" --embeddings "$work/pool.npy" > /dev/null
"$q" project init "$work/p" --dataset "pool:$work/pool.npy" --classes a,b,c --model mlp --strategy entropy \
  --threads "$threads" > /dev/null
"$q" project next "$work/p" -k 100 2> /dev/null > /dev/null   # the cold-start batch
cp -r "$work/p" "$work/big"   # the 10,000-row imports go to a copy: `next` above sees a few hundred labels
label_batch() {  # labels batch $1 (a made-up oracle: index mod 3)
  { echo "index,label"; tail -n +2 "$work/p/batches/$1.csv" | awk -F, '{print $1","($1%3)}'; } > "$work/l.csv"
  "$q" project label "$work/p" "$work/l.csv" > /dev/null
}
next_s=() label_s=()
for r in $(seq "$repeats"); do
  label_batch "$(printf %04d "$r")"
  t0=$(now); "$q" project next "$work/p" -k 100 2> "$work/next.log" > /dev/null; t1=$(now)
  grep -q "training mlp" "$work/next.log" || { echo "next did not retrain" >&2; exit 1; }
  next_s+=("$(awk "BEGIN {print $t1 - $t0}")")
  # 10,000 rows never labeled before (from the end of the pool, a new range each repeat).
  start=$((n - r * 10000))
  { echo "index,label"; seq "$start" $((start + 9999)) | awk '{print $1","($1%3)}'; } > "$work/big.csv"
  t0=$(now); "$q" project label "$work/big" "$work/big.csv" > /dev/null; t1=$(now)
  label_s+=("$(awk "BEGIN {print $t1 - $t0}")")
done
labels_p="$("$q" project status "$work/p" --format json | sed -n 's/^ *"labeled": \([0-9]*\).*/\1/p')"
# And one `next` with the REPEATS x 10,000 imported labels (training grows with the labels).
t0=$(now); "$q" project next "$work/big" -k 100 2> "$work/next-big.log" > /dev/null; t1=$(now)
next_big="$(awk "BEGIN {print $t1 - $t0}")"
labels_big="$("$q" project status "$work/big" --format json | sed -n 's/^ *"labeled": \([0-9]*\).*/\1/p')"
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
list() { local IFS=,; echo "$*"; }
stamp="$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$root" rev-parse --short HEAD)"
out="$root/bench/results/project-$stamp.json"
mkdir -p "$root/bench/results"
cat > "$out" <<JSON
{
  "benchmark": "quarry project next (mlp, CPU, pool of $n x 64 float32 features, k = 100) and project label (10,000-row CSV)",
  "commit": "$(git -C "$root" rev-parse HEAD)",
  "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs",
  "threads": $threads,
  "repeats": $repeats,
  "load_average_at_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "next_seconds": [$(list "${next_s[@]}")],
  "labels_at_last_next": $labels_p,
  "next_seconds_with_many_labels": $next_big,
  "labels_of_that_next": $labels_big,
  "next_log_with_many_labels": "$(tr '\n' ' ' < "$work/next-big.log" | sed 's/"/\\"/g')",
  "label_10000_rows_seconds": [$(list "${label_s[@]}")],
  "median_next_seconds": $(median "${next_s[@]}"),
  "median_label_10000_rows_seconds": $(median "${label_s[@]}"),
  "goals": {"next_seconds": 30, "label_10000_rows_seconds": 1}
}
JSON
cat "$out"
