#!/usr/bin/env bash
# Runs the CPU benchmarks, the NumPy comparison and the whole-process comparison (start-up;
# quarry select against NumPy and modAL's entropy sampling), saving each as JSON in bench/results/.
# Run it on an otherwise idle machine: the figures are wall times.
# Usage: bench/run_cpu.sh [extra bench_cpu flags, e.g. --benchmark_filter=BM_Select]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
stamp="$(date -u +%Y%m%dT%H%M%SZ)-$(git -C "$root" rev-parse --short HEAD)"
out="$root/bench/results"
mkdir -p "$out"
# A Python with NumPy (Debian's python3-numpy lives in /usr/bin/python3).
py=python3
python3 -c 'import numpy' 2>/dev/null || py=/usr/bin/python3
"$root/build/bench/bench_cpu" --benchmark_out="$out/cpu-$stamp-gbench.json" --benchmark_out_format=json \
  --benchmark_repetitions=3 --benchmark_report_aggregates_only=true "$@"
"$py" "$root/bench/numpy_baseline.py" --json "$out/cpu-$stamp-numpy.json"
"$py" "$root/bench/whole_process.py" --python "$py" --json "$out/cpu-$stamp-process.json"
echo "saved $out/cpu-$stamp-gbench.json, $out/cpu-$stamp-numpy.json and $out/cpu-$stamp-process.json"
