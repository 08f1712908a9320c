#!/usr/bin/env bash
# Builds the libFuzzer target for the file readers with clang++ in build-fuzz/, writes a seed
# corpus of small valid files, and fuzzes for SECONDS (default 60).
# Usage: scripts/fuzz.sh [SECONDS]        (JOBS=N sets the build parallelism, default 2)
# Findings (crashes, sanitizer reports) are written to build-fuzz/ as crash-*, leak-*, oom-*.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-fuzz"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DQUARRY_FUZZ=ON -DQUARRY_TORCH=OFF -DQUARRY_CUDA=OFF -DQUARRY_TESTS=OFF -DQUARRY_BENCH=OFF \
  -DQUARRY_MPI=OFF >/dev/null
cmake --build "$build" --target fuzz_readers -j "${JOBS:-2}"

fuzzer="$build/fuzz/fuzz_readers"
mkdir -p "$build/fuzz-corpus" "$build/fuzz-tmp"
export TMPDIR="$build/fuzz-tmp"  # the fuzzer writes each input to a file there
"$fuzzer" --make-seeds "$build/fuzz-seeds"
"$fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$build/" "$build/fuzz-corpus" "$build/fuzz-seeds"
