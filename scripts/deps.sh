#!/usr/bin/env bash
# Installs quarry's build and test dependencies from Debian (12, bookworm).
# As root, missing packages are installed with apt-get; otherwise the missing ones are listed.
# The CUDA toolkit is used where present (/usr/local/cuda) and is not installed here.
set -euo pipefail

packages=(
  cmake g++ ninja-build pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  libopenblas-dev
  zlib1g-dev libzip-dev zipcmp zipmerge ziptool
  libpng-dev libcpp-httplib-dev chromium
  libtorch-dev
  libopenmpi-dev openmpi-bin
  libdlpack-dev pybind11-dev python3-dev
  python3 python3-numpy python3-pytest python3-torch
  clang libclang-rt-14-dev libomp-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "quarry needs these Debian packages, which are not installed:" >&2
  echo "  sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done" >&2
