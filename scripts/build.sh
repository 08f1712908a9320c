#!/usr/bin/env bash
# Configures and builds quarry in BUILD_DIR (default: build), Release, with every feature this
# machine has (CUDA where nvcc is found, LibTorch, MPI). Extra arguments go to cmake.
# BUILD_TARGETS: the targets to build (default: all), e.g. "quarry_cli" for the two programs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
jobs="${JOBS:-$(nproc)}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$jobs" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
