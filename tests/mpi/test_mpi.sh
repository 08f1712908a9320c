#!/bin/sh
# MPI runs of `quarry score` and `quarry select` (CPU ranks, oversubscribed) against the
# single-process run: byte-identical outputs with 1, 2 and 3 ranks, streamed or not, from one file
# or from shards; a rank given a corrupt shard makes every rank exit non-zero with that rank's
# message, and no output (nor a temporary file) is left.
# Usage: test_mpi.sh QUARRY MPIEXEC WORKDIR
set -eu
Q=$1
MPIRUN=$2
W=$3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI containers run as root
export OMPI_MCA_btl_vader_single_copy_mechanism=none               # no ptrace in containers
rm -rf "$W"
mkdir -p "$W"
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }
# Under AddressSanitizer, leak checks stay on for the single-process runs; OpenMPI's own
# allocations (its MCA plugins are unloaded before LeakSanitizer runs, so they cannot be
# suppressed by name) are not leaks of quarry's, so the ranks run without them.
mpirun_() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$MPIRUN" "$@"; }

"$Q" generate -n 30011 -c 10 --seed 1 -o p.npy
"$Q" generate -n 10007 -c 6 -m 5 -d 16 --seed 2 -o com.npy --embeddings emb.npy
"$Q" generate -n 20011 -c 4 --seed 3 --dtype float16 -o h.npy
for i in 0 1 2 3; do "$Q" generate -n $((2000 + 333 * i)) -c 5 --seed $((10 + i)) -o "shard-$i.npy"; done
seq 0 7 30000 > ex.txt
seq 0 7 10000 > ex10k.txt

# name | arguments (the output goes to OUT)
cat > cases.txt <<'CASES'
score-margin|score --input p.npy -a margin -o OUT
score-margin-streamed|score --input p.npy -a margin --memory-budget 64K -o OUT
score-bald-streamed|score --input com.npy -a bald --memory-budget 16K -o OUT
score-egl|score --input com.npy -a egl --embeddings emb.npy --memory-budget 32K -o OUT
score-f16|score --input h.npy -a entropy -o OUT
score-shards|score --input shard-*.npy -a least-confidence --memory-budget 8K -o OUT
topk-exclude|select --input p.npy -a entropy -k 300 --exclude ex.txt --memory-budget 32K -o OUT
topk-committee|select --input com.npy -a kl-max -k 77 --exclude ex10k.txt -o OUT
power|select --input p.npy -a margin --strategy power --beta 3 --seed 5 -k 200 --exclude ex.txt -o OUT
scores-file|select --scores ref-score-margin.out -k 1000 --memory-budget 16K -o OUT
topk-shards|select --input shard-*.npy -a ratio -k 50 --format json -o OUT
CASES

while IFS='|' read -r name cmd; do
  # shellcheck disable=SC2086  # the arguments are words, the glob is quarry's to expand
  set -f
  "$Q" $(echo "$cmd" | sed "s|OUT|ref-$name.out|") --threads 1 < /dev/null
  for np in 1 2 3; do
    mpirun_ --oversubscribe -np $np "$Q" $(echo "$cmd" | sed "s|OUT|np$np-$name.out|") --threads 1 < /dev/null ||
      fail "$name: mpirun -np $np exited non-zero"
    cmp "ref-$name.out" "np$np-$name.out" || fail "$name: $np ranks differ from one process"
  done
  set +f
  echo "ok: $name (1, 2 and 3 ranks byte-identical to one process)"
done < cases.txt

# Diversity on shards: every rank's candidates, the final batch on rank 0 (not identical to one
# process by design): a batch of k distinct, selectable samples.
mpirun_ --oversubscribe -np 3 "$Q" select --strategy kcenter --embeddings emb.npy -k 25 --exclude ex10k.txt \
  --threads 1 -o kc.csv < /dev/null || fail "kcenter under MPI"
[ "$(tail -n +2 kc.csv | cut -d, -f2 | sort -u | wc -l)" = 25 ] || fail "kcenter: not 25 distinct picks"
tail -n +2 kc.csv | cut -d, -f2 | while read -r i; do
  [ $((i % 7)) -ne 0 ] || fail "kcenter picked excluded sample $i"
done
echo "ok: kcenter on 3 ranks"

# A corrupt shard: rank 2's rows hold a NaN. Every rank exits non-zero, the message names the
# shard and the row, and no output or temporary file is left.
cp shard-3.npy bad-3.npy
header=$((10 + $(od -An -tu2 -j8 -N2 bad-3.npy | tr -d ' ')))
printf '\000\000\300\177' | dd of=bad-3.npy bs=1 seek=$((header + (400 * 5 + 2) * 4)) conv=notrunc 2>/dev/null
for i in 0 1 2; do cp "shard-$i.npy" "bad-$i.npy"; done
rm -f exit.*
set +e
mpirun_ --oversubscribe -np 3 sh -c "\"$Q\" select --input 'bad-*.npy' -k 10 --threads 1 -o bad.csv 2>err.\$OMPI_COMM_WORLD_RANK; echo \$? > exit.\$OMPI_COMM_WORLD_RANK" < /dev/null
set -e
for r in 0 1 2; do
  [ -f "exit.$r" ] || fail "rank $r did not finish"
  [ "$(cat "exit.$r")" != 0 ] || fail "rank $r exited 0 although rank 2 failed"
done
cat err.0
grep -q "rank 2 of 3: bad-3.npy" err.0 || fail "rank 0 does not report rank 2's message"
grep -q "row 7399" err.0 || fail "the message does not name the row (2000+2333+2666+400 = 7399)"
ls bad.csv* 2>/dev/null && fail "a partial output was left"
mpirun_ --oversubscribe -np 3 "$Q" score --input 'bad-*.npy' --threads 1 -o bad.npy 2>/dev/null < /dev/null &&
  fail "score over a corrupt shard exited 0"
ls bad.npy* 2>/dev/null && fail "score left a partial output"
echo "ok: a corrupt shard ends every rank with its message and leaves no output"
