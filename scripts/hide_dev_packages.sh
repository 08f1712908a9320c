#!/usr/bin/env bash
# Runs a command with the development files that the GPU machine's image lacks hidden: headers,
# CMake packages, pkg-config files and programs of CLI11, nlohmann-json, fmt, DLPack, libpng,
# libzip, cpp-httplib, OpenSSL, Brotli, zlib, GoogleTest and Google Benchmark (a private mount
# namespace: an empty tmpfs over their folders, an empty file over single files; the machine is
# unchanged outside the command). So a dry run here of gpu_build_there.sh or gpu_loop_check.sh
# finds only what carry/deps/ brings, as it will there. Needs root and unshare (util-linux).
#
#   scripts/hide_dev_packages.sh COMMAND [ARG...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/hide_dev_packages.sh COMMAND [ARG...]" >&2; exit 2; }
# In a mount namespace of its own, never the machine's: the mounts below must not outlive the
# command. The outer run passes its namespace on; the inner one checks that it is in another.
outer="${QUARRY_OUTER_MOUNT_NS:-}"
if [ -z "$outer" ]; then
  here="$(readlink /proc/self/ns/mnt)"
  [ -n "$here" ] || { echo "hide_dev_packages: cannot read /proc/self/ns/mnt" >&2; exit 1; }
  exec unshare --mount env QUARRY_OUTER_MOUNT_NS="$here" "$0" "$@"
fi
unset QUARRY_OUTER_MOUNT_NS
self="$(readlink /proc/self/ns/mnt)"
if [ -z "$self" ] || [ "$self" = "$outer" ] || [ "$self" = "$(readlink "/proc/$PPID/ns/mnt")" ]; then
  echo "hide_dev_packages: not in a mount namespace of its own; nothing hidden" >&2
  exit 1
fi
mount --make-rprivate /
inc=/usr/include lib=/usr/lib/x86_64-linux-gnu
for d in $inc/openssl $inc/x86_64-linux-gnu/openssl $inc/brotli $inc/dlpack $inc/CLI $inc/nlohmann $inc/fmt \
  $inc/libpng16 $inc/gtest $inc/gmock $inc/benchmark $lib/cmake/libzip $lib/cmake/fmt $lib/cmake/dlpack \
  $lib/cmake/GTest $lib/cmake/benchmark /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json $lib/pkgconfig \
  /usr/share/pkgconfig; do
  [ -d "$d" ] && mount -t tmpfs -o ro,size=4k none "$d"
done
# Headers and programs only: a bind mount over a symbolic link covers its target, so the
# development links of shared libraries (libz.so -> libz.so.1.2.13) must stay (without their
# headers and package files nothing finds them anyway). A hidden header stops any compilation
# that includes it; a hidden program fails.
header="$(mktemp)" program="$(mktemp)"
trap 'rm -f "$header" "$program"' EXIT
echo '#error "hidden by scripts/hide_dev_packages.sh: the GPU machine has no such header"' >"$header"
printf '#!/bin/sh\necho "hidden by scripts/hide_dev_packages.sh: the GPU machine has no $0" >&2\nexit 127\n' >"$program"
chmod +x "$program"
for f in $inc/png.h $inc/pngconf.h $inc/pnglibconf.h $inc/zip.h $inc/zipconf.h $inc/httplib.h $inc/zlib.h $inc/zconf.h; do
  [ -e "$f" ] && mount --bind "$header" "$f"
done
[ -e /usr/bin/pkgconf ] && mount --bind "$program" /usr/bin/pkgconf
"$@"
