#!/usr/bin/env bash
# Crash stress of `quarry project label`, the long version of test_project's
# KilledImportsLeaveTheLabelsBeforeOrAfter: each trial writes a large label CSV (different labels
# every time, some trials with --allow-relabel), starts `quarry project label`, kills it with
# SIGKILL after a random delay (0 to a little past the command's typical runtime, measured first
# and again every 50 trials as the journal grows), and checks that the project still opens and
# that its labels (`quarry project export`) are exactly those before the import or those after.
#
#   scripts/stress_project.sh                     # 1000 trials with build/quarry
#   TRIALS=200 BUILD=build-proj scripts/stress_project.sh
#
# Environment: TRIALS (1000), BUILD (build; relative to the repository root unless absolute),
# POOL (20000 items of synthetic:POOL), ROWS_MIN / ROWS_MAX (5000 / 15000 rows per file),
# SEED (1), STATUS_EVERY (10: also run `quarry project status` every that many trials and after
# every torn tail), KEEP (1: keep the work folder even when every trial passed).
# Exit status 0 when every trial passed; 1 with the folder of the failing project kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD:-build}"
[[ "$build" = /* ]] || build="$root/$build"
q="$build/quarry"
trials="${TRIALS:-1000}"
pool="${POOL:-20000}"
rows_min="${ROWS_MIN:-5000}"
rows_max="${ROWS_MAX:-15000}"
seed="${SEED:-1}"
status_every="${STATUS_EVERY:-10}"
[ -x "$q" ] || { echo "stress_project: no $q (build it, or set BUILD)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/quarry-stress-project.XXXXXX")"
ok=0
cleanup() {
  if [ "$ok" = 1 ] && [ "${KEEP:-0}" = 0 ]; then rm -rf "$work"; else echo "stress_project: files in $work" >&2; fi
}
trap cleanup EXIT
dir="$work/proj"
fail() {
  echo "stress_project: FAILED at trial ${trial:-0}: $*" >&2
  exit 1
}
now_ns() { date +%s%N; }

"$q" project init "$dir" --dataset "synthetic:$pool" --strategy random --classes a,b,c,d --seed "$seed" \
  >/dev/null || fail "init"

# make_file SEED RELABEL: writes trial.csv (the import), after.csv (the labels after it, as
# `export --format csv` prints them) and relabel (1 when the import needs --allow-relabel) from
# before.csv. Non-relabel imports label unlabeled items (plus at most a quarter of unchanged
# repeats); when fewer than 100 items are unlabeled they become relabel imports.
make_file() {
  awk -F, -v seed="$1" -v relabel="$2" -v pool="$pool" -v lo="$rows_min" -v hi="$rows_max" \
      -v out="$work/trial.csv" -v after="$work/after.csv" -v flag="$work/relabel" '
    FNR > 1 { label[$1] = $2; labeled++ }
    END {
      srand(seed)
      split("a b c d", cls, " ")
      n = lo + int(rand() * (hi - lo + 1))
      for (i = 0; i < pool; i++) perm[i] = i
      for (i = pool - 1; i > 0; i--) { j = int(rand() * (i + 1)); t = perm[i]; perm[i] = perm[j]; perm[j] = t }
      if (!relabel && pool - labeled < 100) relabel = 1
      print "index,label" > out
      written = 0; repeats = 0
      for (k = 0; k < pool && written < n; k++) {
        i = perm[k]
        c = cls[1 + int(rand() * 4)]
        if (!relabel && (i in label)) {
          if (repeats * 4 >= n) continue
          c = label[i]; repeats++
        }
        print i "," c > out
        label[i] = c; written++
      }
      close(out)
      print "index,label" > after
      for (i = 0; i < pool; i++) if (i in label) print i "," label[i] > after
      close(after)
      print relabel > flag
    }' "$work/before.csv"
}

# label_args: the import command's arguments for the current trial.csv.
label_args() {
  args=(project label "$dir" "$work/trial.csv" --wait 5)
  if [ "$(cat "$work/relabel")" = 1 ]; then args+=(--allow-relabel); fi
}

"$q" project export "$dir" --format csv >"$work/before.csv" || fail "export"

# The typical runtimes: the command's start (--version) and a whole import.
t0=$(now_ns); "$q" --version >/dev/null; startup_ns=$(( $(now_ns) - t0 ))
measure() {
  make_file "$((seed * 100003 + ${trial:-0}))" 0
  label_args
  local t0; t0=$(now_ns)
  "$q" "${args[@]}" >/dev/null 2>"$work/label.err" || fail "a whole import failed: $(cat "$work/label.err")"
  runtime_ns=$(( $(now_ns) - t0 ))
  "$q" project export "$dir" --format csv >"$work/now.csv" || fail "export"
  cmp -s "$work/now.csv" "$work/after.csv" || fail "a whole import did not give the labels after it"
  mv "$work/now.csv" "$work/before.csv"
}
measure
echo "stress_project: pool $pool, $trials trials, start $((startup_ns / 1000000)) ms, import $((runtime_ns / 1000000)) ms, in $work"

before=0; after=0; finished=0; torn=0
start=$(now_ns)
for ((trial = 1; trial <= trials; trial++)); do
  if (( trial % 50 == 0 )); then measure; fi  # the journal grows: measure again
  relabel=$(( trial % 3 != 0 ))
  make_file "$((seed * 100003 + trial))" "$relabel"
  label_args
  # Half the delays anywhere in the run, half after the command's start (where it works).
  if (( trial % 2 )); then lo_ns=$(( startup_ns < runtime_ns ? startup_ns * 8 / 10 : runtime_ns * 8 / 10 )); else lo_ns=0; fi
  delay=$(awk -v s="$((seed * 7919 + trial))" -v lo="$lo_ns" -v hi="$(( runtime_ns * 11 / 10 ))" \
    'BEGIN { srand(s); printf "%.4f", (lo + rand() * (hi - lo)) / 1e9 }')
  "$q" "${args[@]}" >/dev/null 2>"$work/label.err" &
  pid=$!
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  if { wait "$pid"; } 2>/dev/null; then rc=0; else rc=$?; fi
  if [ "$rc" != 0 ] && [ "$rc" != 137 ]; then fail "the import failed (exit $rc): $(cat "$work/label.err")"; fi

  "$q" project export "$dir" --format csv >"$work/now.csv" 2>"$work/export.err" ||
    fail "the project does not open after a kill at $delay s: $(cat "$work/export.err")"
  is_torn=0
  if grep -qi torn "$work/export.err"; then is_torn=1; fi
  if (( trial % status_every == 0 || is_torn )); then
    "$q" project status "$dir" >"$work/status.out" 2>"$work/status.err" ||
      fail "status failed after a kill at $delay s: $(cat "$work/status.err")"
    if grep -qi torn "$work/status.err"; then is_torn=1; fi
  fi
  torn=$((torn + is_torn))
  if cmp -s "$work/now.csv" "$work/after.csv"; then
    after=$((after + 1))
  elif cmp -s "$work/now.csv" "$work/before.csv"; then
    [ "$rc" != 0 ] || fail "the import succeeded but the labels are those before it"
    before=$((before + 1))
  else
    cp "$work/now.csv" "$work/failed_now.csv"
    fail "killed after $delay s (exit $rc): the labels are neither those before nor after" \
      "(before.csv, after.csv, failed_now.csv in $work; $(diff "$work/before.csv" "$work/now.csv" | grep -c '^[<>]') lines differ from before," \
      "$(diff "$work/after.csv" "$work/now.csv" | grep -c '^[<>]') from after)"
  fi
  finished=$((finished + (rc == 0)))
  mv "$work/now.csv" "$work/before.csv"
  if (( trial % 50 == 0 || trial == trials )); then
    echo "stress_project: $trial/$trials: $before before, $after after ($finished finished), $torn torn tails," \
      "$(( ($(now_ns) - start) / 1000000000 )) s"
  fi
done

# One more whole import: the journal is whole again (no torn tail), the labels are those after it.
measure
"$q" project status "$dir" >/dev/null 2>"$work/status.err" || fail "status: $(cat "$work/status.err")"
if grep -qi torn "$work/status.err"; then fail "a torn tail is left after a whole import"; fi
(( before > 0 && after > 0 )) || echo "stress_project: warning: the kills never landed before ($before) or after ($after)" >&2
ok=1
echo "stress_project: passed: $trials trials, $before before, $after after ($finished finished), $torn torn tails"
