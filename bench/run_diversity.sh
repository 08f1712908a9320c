#!/usr/bin/env bash
# Runs the diversity benchmarks and the NumPy comparison, saving both as JSON in bench/results/
# (diversity-<UTC time>-<commit>-gbench.json / -numpy.json).
# Usage: bench/run_diversity.sh [extra bench_diversity flags]
#   BUILD=build-div bench/run_diversity.sh      (the build folder, default build)
#   REPEATS=3                                   (repetitions of every timing, default 3)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/${BUILD:-build}"
repeats="${REPEATS:-3}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$root" rev-parse --short HEAD)"
out="$root/bench/results"
mkdir -p "$out"
# A Python with NumPy (Debian's python3-numpy lives in /usr/bin/python3).
py=python3
python3 -c 'import numpy' 2>/dev/null || py=/usr/bin/python3
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench/bench_diversity" --benchmark_out="$out/diversity-$stamp-gbench.json" --benchmark_out_format=json \
  --benchmark_repetitions="$repeats" --benchmark_report_aggregates_only=true "$@"
"$py" "$root/bench/numpy_diversity.py" --build "$build" --gbench-json "$out/diversity-$stamp-gbench.json" \
  --repeats "$repeats" --json "$out/diversity-$stamp-numpy.json"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "saved $out/diversity-$stamp-gbench.json and $out/diversity-$stamp-numpy.json"
