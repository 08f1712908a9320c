#!/usr/bin/env bash
# Builds quarry's GPU test and benchmark programs HERE (any Debian 12 machine with the CUDA
# toolkit; no GPU needed) and stages them, with the shared libraries the GPU machine lacks, in
# carry/gpu/ (git-ignored), so that one call of the `device` tool can run them with no build:
#
#   scripts/gpu_prepare.sh            build build-gpu/ (sm_90, Release), stage carry/gpu/
#   then, on the GPU machine:         scripts/gpu_check.sh      (docs/gpu.md says how)
#
# What is built: test_cuda, test_diversity_cuda, test_stream, test_batchbald (the CUDA parity tests), bench_cuda,
# bench_stream_cuda, bench_diversity_cuda and the quarry and quarry-loop commands (the tests run them), without
# LibTorch, MPI or NPZ, for CMAKE_CUDA_ARCHITECTURES=90 (H100/H200; CUDA_ARCHS to change), with
# QUARRY_NATIVE=OFF (the GPU machine's processor is another) and the reference BLAS (450 KB).
# The test programs name their build folder by its absolute path (the quarry command, a scratch
# folder), so carry/gpu/BUILD_DIR records it and gpu_check.sh makes that path lead to the
# carried copy there. Also fills carry/deps/ and carry/data/ (scripts/prepare_device_carry.sh): the sources and
# headers gpu_check.sh needs to build on the GPU machine instead, should these programs not
# load there. Prints the size of carry/ (the tool carries 64 MiB in all).
#
# Environment: BUILD_DIR (default build-gpu), JOBS, CUDA_ARCHS (default 90).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-gpu}"
jobs="${JOBS:-$(nproc)}"
stage="$root/carry/gpu"
targets=(test_cuda test_diversity_cuda test_stream test_batchbald bench_cuda bench_stream_cuda bench_diversity_cuda quarry_cli)

mkdir -p "$build"
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
[ -x "$nvcc" ] || { echo "gpu_prepare: no nvcc (the CUDA toolkit) on PATH or in /usr/local/cuda/bin" >&2; exit 1; }
"$root/scripts/deps.sh"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DQUARRY_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
  -DQUARRY_TORCH=OFF -DQUARRY_MPI=OFF -DQUARRY_NPZ=OFF -DQUARRY_FUZZ=OFF -DQUARRY_NATIVE=OFF \
  -DQUARRY_PTXAS_VERBOSE=ON -DBLA_VENDOR=Generic >"$build/configure.log" 2>&1 ||
  { tail -30 "$build/configure.log"; exit 1; }
if ! ninja -C "$build" -j "$jobs" "${targets[@]}" >"$build/build.log" 2>&1; then
  grep -E "error|FAILED" "$build/build.log" | head -20
  echo "gpu_prepare: build failed (log: $build/build.log)" >&2
  exit 1
fi
# The ptxas report (-Xptxas -v) of the last build that compiled CUDA sources.
if grep -q "ptxas info" "$build/build.log"; then
  grep -E "ptxas info|bytes stack frame|Compiling entry" "$build/build.log" >"$build/ptxas.log"
fi

rm -rf "$stage"
mkdir -p "$stage/build-gpu/tests/tmp" "$stage/build-gpu/bench" "$stage/lib"
cp -a "$build"/libquarry_engine.so* "$build"/libquarry_loop.so* "$stage/build-gpu/"
cp "$build/quarry" "$build/quarry-loop" "$stage/build-gpu/"
for t in test_cuda test_diversity_cuda test_stream test_batchbald; do cp "$build/tests/$t" "$stage/build-gpu/tests/"; done
for b in bench_cuda bench_stream_cuda bench_diversity_cuda; do cp "$build/bench/$b" "$stage/build-gpu/bench/"; done
[ -f "$build/ptxas.log" ] && cp "$build/ptxas.log" "$stage/"
echo "$build" >"$stage/BUILD_DIR"
git -C "$root" describe --always --dirty --abbrev=7 >"$stage/COMMIT" 2>/dev/null || echo unknown >"$stage/COMMIT"

# Shared libraries outside the C/C++ runtime and the CUDA toolkit (both are on the GPU machine,
# newer): OpenMP, BLAS, Google Benchmark, ...; copied under their SONAME. cuBLAS is not among
# them: the engine loads it with dlopen on first use (ldd does not list it), from the GPU
# machine's toolkit.
for f in "$stage"/build-gpu/quarry "$stage"/build-gpu/quarry-loop "$stage"/build-gpu/tests/* "$stage"/build-gpu/bench/* \
  "$stage"/build-gpu/libquarry_*.so; do
  [ -f "$f" ] || continue
  ldd "$f" | awk '/=> \// {print $1, $3}'
done | sort -u | while read -r soname path; do
  case "$soname" in
    libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libstdc++.so* | libgcc_s.so* | \
      libquarry_*.so* | libcuda.so* | libcudart.so* | libcublas*.so* | libnvidia*) continue ;;
    # Debian's alternatives may point libblas.so.3 at OpenBLAS (36 MB with its Fortran runtime):
    # the reference BLAS has the same sgemm_ and needs only libc.
    libblas.so.3) path=/usr/lib/x86_64-linux-gnu/blas/libblas.so.3 ;;
    libopenblas.so* | libgfortran.so* | libquadmath.so*) continue ;;
  esac
  case "$path" in /usr/local/cuda*) continue ;; esac
  cp -L "$path" "$stage/lib/$soname"
done

# The BLAS is loaded on the first GEMM too (dlopen, by the SONAME the build found: the reference
# libblas.so.3 with BLA_VENDOR=Generic), so ldd does not list it either: staged explicitly.
blas=/usr/lib/x86_64-linux-gnu/blas/libblas.so.3
[ -f "$blas" ] && cp -L "$blas" "$stage/lib/libblas.so.3"

"$root/scripts/prepare_device_carry.sh" >/dev/null
echo "gpu_prepare: staged $(cat "$stage/COMMIT") in carry/gpu ($(du -sh "$stage" | cut -f1)): $(ls "$stage/lib" | tr '\n' ' ')"
echo "gpu_prepare: carry/ in all $(du -sh "$root/carry" | cut -f1) (the device tool carries 64 MiB)"
