#!/usr/bin/env bash
# The fallback of scripts/gpu_check.sh: builds quarry's GPU programs ON the GPU machine, with the
# dependencies carried in carry/deps (scripts/prepare_device_carry.sh, run by gpu_prepare.sh),
# for when the programs built here by scripts/gpu_prepare.sh do not load there. Configures with
# -DQUARRY_TORCH=OFF -DQUARRY_MPI=OFF -DQUARRY_NPZ=OFF, builds GoogleTest and Google Benchmark
# from the carried sources with that machine's compiler first (~15 s on 16 cores).
#
#   scripts/gpu_build_there.sh [TARGET...]      (default: every target)
#
# Environment: BUILD_DIR (default build-gpu-there), JOBS (default: all cores), CUDA_ARCHS
# (default 90), CMAKE_ARGS (extra configure arguments), OUT (where environment.txt and the
# logs go; default BUILD_DIR/logs), TORCH_PREFIX (a LibTorch CMake prefix, such as the machine's
# PyTorch's `torch.utils.cmake_prefix_path`: builds the loop with it, -DQUARRY_TORCH=ON, and
# reads NPZ files, -DQUARRY_NPZ=ON; scripts/gpu_loop_check.sh sets it), TEST_DEPS (0: skips
# building GoogleTest and Google Benchmark, for a configuration with -DQUARRY_TESTS=OFF
# -DQUARRY_BENCH=OFF).
set -uo pipefail
start=$SECONDS
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-gpu-there}"
jobs="${JOBS:-$(nproc)}"
deps="$root/carry/deps"
logs="${OUT:-$build/logs}"
mkdir -p "$logs" "$build"

targets=("$@")

say() { printf '[gpu_build_there %4ds] %s\n' "$((SECONDS - start))" "$*"; }

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
# test process (the installed copy of the quarry libraries that the consumer test links has no RPATH).
# The libraries the carried ones load (OpenSSL, Brotli, bzip2; the linker looks for them too)
# only where the image has none: its own OpenSSL stays the one its Python and tools load.
missing="$("$root/scripts/missing_libs.sh" "$deps/prefix/lib/fallback" "$build/_deps/missing-libs")"
export LD_LIBRARY_PATH="$deps/prefix/lib:$cuda_home/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:$missing"

if [ ! -f "$logs/environment.txt" ]; then
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    grep -m1 PRETTY_NAME /etc/os-release 2>/dev/null
    echo "glibc: $(ldd --version 2>/dev/null | head -1)"
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
    else
      echo "gpu: none (no nvidia-smi)"
    fi
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
if [ "${TEST_DEPS:-1}" = 1 ]; then
  build_dep googletest "$deps/src/googletest" -DBUILD_GMOCK=ON -DINSTALL_GTEST=ON || exit 3
  build_dep benchmark "$(ls -d "$deps"/src/benchmark-*)" -DBENCHMARK_ENABLE_TESTING=OFF \
    -DBENCHMARK_ENABLE_GTEST_TESTS=OFF -DBENCHMARK_ENABLE_WERROR=OFF -DBENCHMARK_INSTALL_DOCS=OFF || exit 3
fi

# ------------------------------------------------------------------ configure and build
zlib_args=()
if ! echo '#include <zlib.h>' | c++ -x c++ -E - >/dev/null 2>&1; then
  libz="$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')"
  [ -z "$libz" ] && libz="$(ls /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1 2>/dev/null | head -1)"
  zlib_args=(-DZLIB_INCLUDE_DIR="$deps/prefix/include" -DZLIB_LIBRARY="$libz")
  say "no zlib.h on this machine: carried headers with $libz"
fi
# The loop (LibTorch) and NPZ files where TORCH_PREFIX names a LibTorch; libpng, cpp-httplib,
# libzip and DLPack from the carry, found before anything of the image's (pkg-config: the carried
# pkgconf, which reads only the carried package files).
torch_args=(-DQUARRY_TORCH=OFF -DQUARRY_NPZ=OFF)
prefixes="$prefix;$deps/prefix"
if [ -n "${TORCH_PREFIX:-}" ]; then
  torch_args=(-DQUARRY_TORCH=ON -DQUARRY_NPZ=ON)
  prefixes="$prefixes;$TORCH_PREFIX"
  # LibTorch's package picks CUDA architectures by TORCH_CUDA_ARCH_LIST, else by probing the GPU
  # at configure time: name ours ("90" -> "9.0"; "90a", "90-real" -> "9.0"), which saves the
  # probe (quarry's CMakeLists.txt keeps its own architectures for its kernels either way).
  archs="${CUDA_ARCHS:-90}"
  torch_archs="$(echo "${archs//;/ }" | sed -E 's/([0-9]+)([0-9])[a-z]*(-real|-virtual)?/\1.\2/g')"
  if [[ "$torch_archs" =~ ^[0-9.\ ]+$ ]]; then
    export TORCH_CUDA_ARCH_LIST="$torch_archs"
  fi
fi
say "configuring $build${TORCH_PREFIX:+ with LibTorch from $TORCH_PREFIX}"
t0=$SECONDS
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DQUARRY_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
  "${torch_args[@]}" -DQUARRY_MPI=OFF -DQUARRY_FUZZ=OFF -DQUARRY_PTXAS_VERBOSE=ON \
  -DCMAKE_PREFIX_PATH="$prefixes" -DPKG_CONFIG_EXECUTABLE="$deps/prefix/bin/pkg-config" \
  "${zlib_args[@]}" ${CMAKE_ARGS:-} >"$logs/configure.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  tail -40 "$logs/configure.log"
  say "configure failed (log: configure.log)"
  exit 4
fi
grep -E "^-- quarry|_DIR:PATH|BLAS_.*LIBRARY:FILEPATH=/|PNG_LIBRARY_RELEASE:FILEPATH=|ZLIB_LIBRARY_RELEASE:FILEPATH=" "$build/CMakeCache.txt" "$logs/configure.log" 2>/dev/null |
  grep -E "quarry|GTest_DIR|benchmark_DIR|fmt_DIR|CLI11_DIR|nlohmann_json_DIR|dlpack_DIR|libzip_DIR|Torch_DIR|BLAS|PNG_LIBRARY|ZLIB_LIBRARY" | sed 's/^/  /'
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
if [ -f "$logs/ptxas.log" ]; then
  say "built in ${build_s}s; ptxas: $(grep -c "Compiling entry function" "$logs/ptxas.log") kernel compilations, ${spills:-0} reports with spills (ptxas.log)"
else
  say "built in ${build_s}s (no CUDA source compiled)"
fi
exit 0
