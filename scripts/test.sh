#!/usr/bin/env bash
# The quick start's second command: installs what is missing, builds from scratch and runs the
# whole test suite: the Release build (with every feature found), then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer, then a short libFuzzer run of the readers.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jobs="${JOBS:-$(nproc)}"
"$root/scripts/deps.sh"

# From scratch: fresh build folders every run (build/ of demo.sh is left alone).
rm -rf "$root/build-test" "$root/build-asan"

echo "== Release build and tests"
BUILD_DIR="$root/build-test" "$root/scripts/build.sh"
ctest --test-dir "$root/build-test" --output-on-failure -j "$jobs"

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
# Debug (asserts on) at -O1, the engine at -O2 (CMakeLists.txt): -O0 under ASan runs the
# compute-heavy suite too slowly for CI, and -O2 everywhere doubles the build of the rest.
BUILD_DIR="$root/build-asan" "$root/scripts/build.sh" -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" -DQUARRY_SANITIZE=ON \
  -DQUARRY_CUDA=OFF -DQUARRY_TORCH=OFF -DQUARRY_BENCH=OFF -DQUARRY_PYTHON=OFF
# handle_sigbus=0: quarry's own SIGBUS handler turns a mapped input that shrinks into an error
# (tests/test_hostile.cpp checks it); ASan's would end the test first.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:handle_sigbus=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$root/build-asan" --output-on-failure -j "$jobs" -E consumer_find_package

if command -v clang++ >/dev/null && [ -x "$root/scripts/fuzz.sh" ]; then
  echo "== libFuzzer smoke run of the readers"
  "$root/scripts/fuzz.sh" "${FUZZ_SECONDS:-30}"
fi
echo "all tests passed"
