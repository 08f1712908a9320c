#!/usr/bin/env bash
# Label-efficiency benchmarks of the LibTorch loop on the real data sets in ../shared/data:
# `quarry simulate` with the protocol of the issue (200 initial labels, 10 rounds of 100,
# 5 repeats) on PneumoniaMNIST, on a 20k subset of MNIST, and on Repeated MNIST (6,667 MNIST
# images, 3 noisy copies of each: bench/repeated_mnist.py, generated into a temporary folder and
# deleted after the run). Each run's report (summary.md,
# curves.svg, summary.json, curves.csv, rounds.jsonl) goes to
# bench/results/simulate-<dataset>-<UTC time>-<commit>/.
# Usage: bench/run_simulate.sh [pneumoniamnist] [mnist] [repeated-mnist] [-- extra simulate flags]
#   BUILD=build-train bench/run_simulate.sh pneumoniamnist      (the build folder, default build)
#   STRATEGIES=random,entropy,margin,bald,badge  REPEATS=5  ROUNDS=10  THREADS=0
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/${BUILD:-build}"
data="$(cd "$root/.." && pwd)/shared/data"
strategies="${STRATEGIES:-random,entropy,margin,bald,badge}"
repeats="${REPEATS:-5}"
rounds="${ROUNDS:-10}"
threads="${THREADS:-0}"
sets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do sets+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#sets[@]} -eq 0 ] && sets=(pneumoniamnist mnist)
tmp=""
trap 'if [ -n "$tmp" ]; then rm -rf "$tmp"; fi' EXIT
commit="$(git -C "$root" rev-parse --short HEAD)"
for set in "${sets[@]}"; do
  case "$set" in
    pneumoniamnist) spec="npz:$data/pneumoniamnist/pneumoniamnist.npz"; extra=() ;;
    mnist) spec="idx:$data/mnist"; extra=(--pool-limit 20000) ;;
    repeated-mnist)
      [ -n "$tmp" ] || tmp="$(mktemp -d)"
      python3 "$root/bench/repeated_mnist.py" "$tmp/repeated-mnist.npz" --data "$data/mnist"
      spec="npz:$tmp/repeated-mnist.npz"; extra=() ;;
    *) echo "unknown data set $set (pneumoniamnist, mnist, repeated-mnist)" >&2; exit 2 ;;
  esac
  out="$root/bench/results/simulate-$set-$(date -u +%Y%m%dT%H%M%SZ)-$commit"
  echo "== $set -> $out (load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs)"
  "$build/quarry" simulate --dataset "$spec" "${extra[@]}" --strategies "$strategies" --seed-size 200 \
    --batch 100 --rounds "$rounds" --repeats "$repeats" --threads "$threads" --out "$out" "$@"
  "$build/quarry" --version > "$out/build.txt"
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs" >> "$out/build.txt"
done
