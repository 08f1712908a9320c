#!/usr/bin/env bash
# The GPU machine's check: builds quarry with the dependencies carried in carry/deps (see
# scripts/prepare_device_carry.sh), runs the whole test suite (ctest: the CUDA parity tests
# included), then the parity tests under compute-sanitizer memcheck and racecheck. Made for one
# call of the `device` tool (10 minutes, 16 cores, no network); works on any Linux machine with a
# GPU, the CUDA toolkit, CMake and ninja.
#
#   scripts/gpu_check.sh                      everything; logs and a summary JSON under $OUT
#   scripts/gpu_check.sh --build-only [TARGET...]   configure and build (bench/run_gpu.sh uses it)
#
# Environment (all optional):
#   OUT           where the logs and the summary gpu-<stamp>-<commit>-check.json go (8 files: the
#                 device tool brings back at most 8); default build-gpu/logs. The summary is also
#                 copied to bench/results/
#   BUILD_DIR     build folder (default build-gpu; kept between calls while the machine is warm)
#   JOBS          build parallelism (default: all cores)
#   CUDA_ARCHS    CMAKE_CUDA_ARCHITECTURES (default 90: H100/H200; CI builds 80;90 elsewhere)
#   DEADLINE      seconds this script may take in all (default 570): the sanitizer runs get what
#                 is left, each stopped by `timeout` rather than the tool's 10-minute limit
#   SAN_FILTER    --gtest_filter of the sanitizer runs (default: every test_cuda test but the
#                 command-line ones, which start subprocesses), run with QUARRY_CUDA_TEST_QUICK=1
#   CTEST_JOBS    ctest parallelism (default 8)
#   CTEST_ARGS    extra ctest arguments (e.g. "-E consumer_find_package")
#   CMAKE_ARGS    extra arguments for configuring quarry (e.g. -DBLA_VENDOR=Generic)
#   QUARRY_COMMIT commit to name the results with where the tree has no .git
set -uo pipefail
start=$SECONDS
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-gpu}"
jobs="${JOBS:-$(nproc)}"
deadline="${DEADLINE:-570}"
deps="$root/carry/deps"
logs="${OUT:-$build/logs}"
mkdir -p "$logs" "$build"

build_only=0
targets=()
if [ "${1:-}" = "--build-only" ]; then
  build_only=1
  shift
  targets=("$@")
fi

say() { printf '[gpu_check %4ds] %s\n' "$((SECONDS - start))" "$*"; }
left() { echo $((deadline - (SECONDS - start))); }

# ------------------------------------------------------------------ the machine
nvcc="$(command -v nvcc || true)"
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -z "$nvcc" ]; then
  say "no nvcc on PATH or in /usr/local/cuda/bin: cannot build the CUDA backend"
  exit 2
fi
cuda_home="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"
export PATH="$cuda_home/bin:$PATH"
sanitizer="$(command -v compute-sanitizer || true)"
for c in "$cuda_home/bin/compute-sanitizer" "$cuda_home/compute-sanitizer/compute-sanitizer"; do
  [ -z "$sanitizer" ] && [ -x "$c" ] && sanitizer="$c"
done
if [ ! -d "$deps/prefix" ]; then
  say "carry/deps is missing: run scripts/prepare_device_carry.sh on the development machine and name \"carry\" in the call's carry list"
  exit 2
fi
# The carried BLAS (and OpenBLAS's Fortran runtime) and the CUDA runtime for the loader, in every
# test process (the installed copy of libquarry that the consumer test links has no RPATH).
export LD_LIBRARY_PATH="$deps/prefix/lib:$cuda_home/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ "$build_only" = 0 ] || [ ! -f "$logs/environment.txt" ]; then
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    grep -m1 PRETTY_NAME /etc/os-release 2>/dev/null
    echo "glibc: $(ldd --version 2>/dev/null | head -1)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
    echo "nvcc: $("$nvcc" --version | tail -2 | tr '\n' ' ')"
    echo "compute-sanitizer: ${sanitizer:-none} $([ -n "$sanitizer" ] && "$sanitizer" --version 2>/dev/null | tail -1)"
    echo "cmake: $(cmake --version | head -1), ninja $(ninja --version)"
    echo "c++: $(c++ --version | head -1)"
    echo "python3: $(command -v python3) $(python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)"
    echo "zlib.h: $(echo '#include <zlib.h>' | c++ -x c++ -E - >/dev/null 2>&1 && echo system || echo "missing (carried headers used)")"
    echo "blas: $(ldconfig -p 2>/dev/null | grep -E 'lib(open)?blas' | head -3 | tr '\n' ' ')"
  } >"$logs/environment.txt" 2>&1
  sed 's/^/  /' "$logs/environment.txt"
fi

# ------------------------------------------------------------------ GoogleTest and Google Benchmark
# Built from the carried sources with this machine's compiler, installed into the build folder
# (kept, like the build, while the machine stays warm).
prefix="$build/_deps/prefix"
build_dep() {  # name source-dir cmake-args...
  local name="$1" src="$2"
  shift 2
  [ -f "$build/_deps/$name.done" ] && return 0
  say "building $name from carry/deps"
  cmake -S "$src" -B "$build/_deps/$name" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_POLICY_VERSION_MINIMUM=3.5 "$@" >"$build/_deps/$name.log" 2>&1 &&
    cmake --build "$build/_deps/$name" -j "$jobs" >>"$build/_deps/$name.log" 2>&1 &&
    cmake --install "$build/_deps/$name" >>"$build/_deps/$name.log" 2>&1 &&
    touch "$build/_deps/$name.done" && return 0
  tail -30 "$build/_deps/$name.log"
  return 1
}
mkdir -p "$build/_deps"
build_dep googletest "$deps/src/googletest" -DBUILD_GMOCK=ON -DINSTALL_GTEST=ON || exit 3
build_dep benchmark "$(ls -d "$deps"/src/benchmark-*)" -DBENCHMARK_ENABLE_TESTING=OFF \
  -DBENCHMARK_ENABLE_GTEST_TESTS=OFF -DBENCHMARK_ENABLE_WERROR=OFF -DBENCHMARK_INSTALL_DOCS=OFF || exit 3

# ------------------------------------------------------------------ configure and build
zlib_args=()
if ! echo '#include <zlib.h>' | c++ -x c++ -E - >/dev/null 2>&1; then
  libz="$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')"
  [ -z "$libz" ] && libz="$(ls /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1 2>/dev/null | head -1)"
  zlib_args=(-DZLIB_INCLUDE_DIR="$deps/zlib/include" -DZLIB_LIBRARY="$libz")
  say "no zlib.h on this machine: carried headers with $libz"
fi
say "configuring $build"
t0=$SECONDS
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DQUARRY_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
  -DQUARRY_TORCH=OFF -DQUARRY_MPI=OFF -DQUARRY_NPZ=OFF -DQUARRY_FUZZ=OFF -DQUARRY_PTXAS_VERBOSE=ON \
  -DCMAKE_PREFIX_PATH="$prefix;$deps/prefix" "${zlib_args[@]}" ${CMAKE_ARGS:-} >"$logs/configure.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  tail -40 "$logs/configure.log"
  say "configure failed (log: configure.log)"
  exit 4
fi
grep -E "^-- quarry|_DIR:PATH|BLAS_.*LIBRARY:FILEPATH=/" "$build/CMakeCache.txt" "$logs/configure.log" 2>/dev/null |
  grep -E "quarry|GTest_DIR|benchmark_DIR|fmt_DIR|CLI11_DIR|nlohmann_json_DIR|BLAS" | sed 's/^/  /'
say "building with -j$jobs ${targets[*]:-(all targets)}"
ninja -C "$build" -j "$jobs" "${targets[@]}" >"$logs/build.log" 2>&1
rc=$?
build_s=$((SECONDS - t0))
# The ptxas resource report (-Xptxas -v) of every kernel: registers, shared memory, spills. Kept
# in the build folder: an incremental build that compiles no .cu file reports nothing new.
grep -E "ptxas info|bytes stack frame" "$logs/build.log" >"$build/ptxas.new" 2>/dev/null
[ -s "$build/ptxas.new" ] && mv "$build/ptxas.new" "$build/ptxas.log"
[ -f "$build/ptxas.log" ] && cp "$build/ptxas.log" "$logs/ptxas.log"
spills="$(grep -cE "[1-9][0-9]* bytes spill (stores|loads)" "$logs/ptxas.log" 2>/dev/null)"
if [ $rc -ne 0 ]; then
  grep -E "error|FAILED" "$logs/build.log" | head -40
  say "build failed after ${build_s}s (log: build.log)"
  exit 5
fi
say "built in ${build_s}s; ptxas: $(grep -c "Compiling entry function" "$logs/ptxas.log") kernel compilations, ${spills:-0} reports with spills (ptxas.log)"
[ "$build_only" = 1 ] && exit 0

# ------------------------------------------------------------------ the tests
say "ctest (every test; the CUDA parity tests run on the GPU)"
t0=$SECONDS
# shellcheck disable=SC2086
timeout "$(( $(left) > 400 ? 300 : $(left) / 2 ))" ctest --test-dir "$build" --output-on-failure -j "${CTEST_JOBS:-8}" --timeout 240 \
  ${CTEST_ARGS:-} >"$logs/ctest.log" 2>&1
ctest_rc=$?
ctest_s=$((SECONDS - t0))
ctest_line="$(grep -E "tests passed|tests failed" "$logs/ctest.log" | tail -1)"
say "ctest: rc $ctest_rc in ${ctest_s}s: ${ctest_line:-no summary (timed out?)}"
grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted|Not Run)\)" "$logs/ctest.log" | head -20
cuda_skipped="$(grep -c "Skipped.*no CUDA device" "$logs/ctest.log")"
[ "$cuda_skipped" -gt 0 ] && say "WARNING: $cuda_skipped CUDA tests skipped: no device visible to the tests"

# ------------------------------------------------------------------ compute-sanitizer
filter="${SAN_FILTER:--CudaCommandLine.*:CudaUnavailable.*}"
san_result() {  # tool log rc
  local tool="$1" log="$2" rc="$3"
  if [ "$rc" = 124 ]; then echo "timed out"; return; fi
  if [ "$tool" = racecheck ]; then
    grep -E "RACECHECK SUMMARY" "$log" | tail -1 | sed 's/^========= //'
  else
    grep -E "ERROR SUMMARY" "$log" | tail -1 | sed 's/^========= //'
  fi
}
declare -A san_rc san_s san_summary
for tool in memcheck racecheck; do
  log="$logs/$tool.log"
  budget=$(( $(left) - 20 ))
  [ "$tool" = memcheck ] && budget=$(( budget * 55 / 100 ))
  if [ -z "$sanitizer" ]; then
    san_rc[$tool]=127; san_s[$tool]=0; san_summary[$tool]="compute-sanitizer not found"
    echo "compute-sanitizer not found" >"$log"
    continue
  fi
  if [ "$budget" -lt 30 ]; then
    san_rc[$tool]=124; san_s[$tool]=0; san_summary[$tool]="not run: no time left"
    echo "not run: ${budget}s left" >"$log"
    continue
  fi
  say "compute-sanitizer --tool $tool (quick case lists, ${budget}s at most)"
  t0=$SECONDS
  # No --leak-check: the per-device contexts (stream, cuBLAS handle, memory pool) live until exit
  # by design (kernels/context.cu).
  QUARRY_CUDA_TEST_QUICK=1 timeout --kill-after=10 "$budget" "$sanitizer" --tool "$tool" \
    --error-exitcode 86 --print-limit 100 "$build/tests/test_cuda" --gtest_filter="$filter" >"$log" 2>&1
  san_rc[$tool]=$?
  san_s[$tool]=$((SECONDS - t0))
  san_summary[$tool]="$(san_result "$tool" "$log" "${san_rc[$tool]}")"
  say "$tool: rc ${san_rc[$tool]} in ${san_s[$tool]}s: ${san_summary[$tool]}; $(grep -E "^\[  (PASSED|FAILED)  \]" "$log" | head -2 | tr '\n' ' ')"
done

# ------------------------------------------------------------------ summary
commit="${QUARRY_COMMIT:-$(git -C "$root" describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
summary="$logs/gpu-$stamp-$commit-check.json"
python3 - "$summary" <<EOF
import json, re, sys
def text(p):
    try:
        return open(p, errors="replace").read()
    except OSError:
        return ""
env = dict(l.split(": ", 1) for l in text("$logs/environment.txt").splitlines() if ": " in l)
ptx = text("$logs/ptxas.log")
kernels = []
cur = None
for line in ptx.splitlines():
    m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
    if m:
        cur = {"kernel": m.group(1), "arch": m.group(2)}
        kernels.append(cur)
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
    m = re.search(r"Used (\d+) registers", line)
    if m:
        cur["registers"] = int(m.group(1))
        s = re.search(r"(\d+) bytes smem", line)
        if s:
            cur["smem"] = int(s.group(1))
res = {
    "what": "gpu_check", "commit": "$commit", "date": "$stamp", "environment": env,
    "build_seconds": $build_s, "cuda_archs": "${CUDA_ARCHS:-90}",
    "ctest": {"rc": $ctest_rc, "seconds": $ctest_s, "summary": "$ctest_line", "cuda_tests_skipped": $cuda_skipped},
    "sanitizers": {t: {"rc": int(rc), "seconds": int(s), "summary": summ} for t, rc, s, summ in [
        ("memcheck", "${san_rc[memcheck]}", "${san_s[memcheck]}", "${san_summary[memcheck]}"),
        ("racecheck", "${san_rc[racecheck]}", "${san_s[racecheck]}", "${san_summary[racecheck]}")]},
    "sanitizer_filter": "$filter",
    "kernels_with_spills": [k for k in kernels if k.get("spill_stores", 0) or k.get("spill_loads", 0)],
    "kernels": kernels,
}
try:  # readable kernel names where c++filt exists
    import subprocess
    names = subprocess.run(["c++filt"], input="\n".join(k["kernel"] for k in kernels), capture_output=True,
                           text=True, timeout=30).stdout.splitlines()
    if len(names) == len(kernels):
        for k, n in zip(kernels, names):
            k["name"] = n
except Exception:
    pass
json.dump(res, open(sys.argv[1], "w"), indent=1)
EOF
mkdir -p "$root/bench/results"
cp "$summary" "$root/bench/results/" 2>/dev/null

ok=1
[ "$ctest_rc" = 0 ] || ok=0
for tool in memcheck racecheck; do [ "${san_rc[$tool]}" = 0 ] || ok=0; done
echo
echo "== gpu_check summary ($commit, $(head -1 "$logs/environment.txt" 2>/dev/null))"
printf '  %-10s %s\n' build "${build_s}s, ${spills:-0} ptxas reports with spills" \
  ctest "rc $ctest_rc, ${ctest_s}s: $ctest_line" \
  memcheck "rc ${san_rc[memcheck]}, ${san_s[memcheck]}s: ${san_summary[memcheck]}" \
  racecheck "rc ${san_rc[racecheck]}, ${san_s[racecheck]}s: ${san_summary[racecheck]}"
echo "  logs: $logs ($(ls "$logs" | tr '\n' ' ')); summary: $(basename "$summary") (also in bench/results/)"
echo "  total $((SECONDS - start))s"
[ "$ok" = 1 ] && exit 0 || exit 1
