#!/usr/bin/env bash
# The GPU benchmarks in one call of the `device` tool: builds bench_cuda (scripts/gpu_check.sh
# --build-only, with the dependencies carried in carry/deps), runs it, then the PyTorch eager
# comparison on the same device (bench/compare_torch.py), and saves
#   bench/results/gpu-<UTC stamp>-<commit>-bench.json   bench_cuda's Google Benchmark JSON
#   bench/results/gpu-<UTC stamp>-<commit>-torch.json   the comparison: device, driver, torch,
#                                                       commit, every figure, the goals' ratios
# and copies them, with the console logs and the machine's description, to $OUT when it is set
# (the device tool brings back what is under $OUT: at most 8 files).
#
# Environment (all optional): BENCH_ARGS (extra bench_cuda flags, e.g.
# --benchmark_filter=topk), TORCH_ARGS (extra compare_torch.py flags, e.g. "--repeats 11"),
# QUARRY_COMMIT (names the results where the tree has no .git), BUILD_DIR, JOBS, CUDA_ARCHS
# (as scripts/gpu_check.sh).
set -uo pipefail
start=$SECONDS
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-gpu}"
export BUILD_DIR="$build"
say() { printf '[run_gpu %4ds] %s\n' "$((SECONDS - start))" "$*"; }

# Build logs stay in the build folder; $OUT gets the results.
OUT='' "$root/scripts/gpu_check.sh" --build-only bench_cuda bench_stream_cuda quarry_cli || { say "build failed"; exit 5; }
export LD_LIBRARY_PATH="$root/carry/deps/prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"  # the carried BLAS

commit="${QUARRY_COMMIT:-$(git -C "$root" describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)}"
export QUARRY_COMMIT="$commit"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
results="$root/bench/results"
mkdir -p "$results"
bench_json="$results/gpu-$stamp-$commit-bench.json"
torch_json="$results/gpu-$stamp-$commit-torch.json"
logs="$build/logs"
mkdir -p "$logs"

say "bench_cuda -> $(basename "$bench_json")"
t0=$SECONDS
# shellcheck disable=SC2086
"$build/bench/bench_cuda" --benchmark_out="$bench_json" --benchmark_out_format=json ${BENCH_ARGS:-} \
  2>&1 | tee "$logs/bench_cuda.log"
bench_rc=${PIPESTATUS[0]}
say "bench_cuda: rc $bench_rc in $((SECONDS - t0))s"

# The streaming goal: a pinned 2 GB float16 pool under a 512 MiB budget vs the pinned copy bandwidth.
stream_json="$results/gpu-$stamp-$commit-stream.json"
say "bench_stream_cuda -> $(basename "$stream_json")"
"$build/bench/bench_stream_cuda" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_out="$stream_json" --benchmark_out_format=json 2>&1 | tee "$logs/bench_stream_cuda.log"
say "bench_stream_cuda: rc ${PIPESTATUS[0]}"

torch_rc=1
if [ -s "$bench_json" ]; then
  say "compare_torch.py -> $(basename "$torch_json")"
  t0=$SECONDS
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 python3 "$root/bench/compare_torch.py" --quarry-json "$bench_json" --json "$torch_json" \
    ${TORCH_ARGS:-} 2>&1 | tee "$logs/compare_torch.log"
  torch_rc=${PIPESTATUS[0]}
  say "compare_torch.py: rc $torch_rc in $((SECONDS - t0))s"
fi

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  for f in "$bench_json" "$torch_json" "$stream_json" "$logs/bench_stream_cuda.log" "$logs/bench_cuda.log" "$logs/compare_torch.log" "$logs/environment.txt" \
           "$logs/ptxas.log"; do
    [ -f "$f" ] && cp "$f" "$OUT/"
  done
  say "copied to \$OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
say "done in $((SECONDS - start))s: bench_cuda rc $bench_rc, compare_torch rc $torch_rc"
[ "$bench_rc" = 0 ] && [ "$torch_rc" = 0 ]
