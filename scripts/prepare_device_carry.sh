#!/usr/bin/env bash
# Fills carry/deps/ (git-ignored: /carry/ in .gitignore) with what the GPU machine of the
# `device` tool lacks for building quarry, so that a call there can name "carry" in its `carry`
# list and build quarry there with no network (scripts/gpu_build_there.sh, the fallback of
# scripts/gpu_check.sh when the programs built here by scripts/gpu_prepare.sh do not load):
#
#   carry/deps/prefix/   CLI11 2.1, nlohmann-json 3.11 and fmt 9.1 headers with CMake package
#                        files (CLI11's and nlohmann_json's from Debian, relocatable; fmt's
#                        written here, header-only: Debian's also imports libfmt.so)
#   carry/deps/src/googletest/       GoogleTest 1.12.1 sources (Debian's googletest package)
#   carry/deps/src/benchmark-1.7.1/  Google Benchmark 1.7.1 sources (Debian's source package:
#                                    libbenchmark-dev ships only a shared library and headers)
#   carry/deps/prefix/ also          libpng, cpp-httplib, libzip and DLPack (headers, libraries and
#                                    package files), the headers httplib.h includes (OpenSSL,
#                                    Brotli, zlib), the libraries they load (lib/fallback/) and
#                                    pkgconf: what the LibTorch loop's build there needs
#                                    (scripts/gpu_loop_check.sh)
#   carry/data/pneumoniamnist.npz    PneumoniaMNIST from ../shared/data (3.4 MB; the loop check's
#                                    simulate rounds), where it is there
#   carry/deps/prefix/lib/libblas.so[.3]  the reference BLAS (Debian libblas3: sgemm_ for the
#                                    diversity strategies; 450 KB, needs only libc). With
#                                    WITH_OPENBLAS=1, OpenBLAS instead (40 MB with libgfortran5
#                                    and libquadmath0: fast, but most of the 64 MiB the tool carries)
#
# GoogleTest and Google Benchmark are built from these sources on the device machine by
# scripts/gpu_check.sh (a few seconds with 16 cores), with the image's own compiler: no
# prebuilt C++ library has to match its compiler and glibc. Runs on the Debian 12 development
# machine (needs googletest, libcli11-dev, nlohmann-json3-dev, libfmt-dev, zlib1g-dev: see
# scripts/deps.sh; and the Debian archive reachable for `apt-get source`, once, cached in
# ~/.cache/quarry). Prints the size of carry/ at the end (the tool carries 64 MiB in all).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dst="$root/carry/deps"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/quarry"
bench_version=1.7.1

need() { [ -e "$1" ] || { echo "prepare_device_carry: missing $1 ($2)" >&2; exit 1; }; }
need /usr/src/googletest/CMakeLists.txt "apt-get install googletest"
need /usr/include/CLI/CLI.hpp "apt-get install libcli11-dev"
need /usr/share/cmake/CLI11/CLI11Config.cmake "apt-get install libcli11-dev"
need /usr/include/nlohmann/json.hpp "apt-get install nlohmann-json3-dev"
need /usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake "apt-get install nlohmann-json3-dev"
need /usr/include/fmt/format.h "apt-get install libfmt-dev"
need /usr/include/zlib.h "apt-get install zlib1g-dev"
need /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 "apt-get install libblas3"

rm -rf "$dst"
mkdir -p "$dst/prefix/include" "$dst/prefix/share/cmake" "$dst/prefix/lib/cmake/fmt" "$dst/src"

# Header-only libraries. Debian's CLI11 and nlohmann_json package files compute their prefix
# from their own location (three folders up from share/cmake/<name>/), so they work from here.
cp -r /usr/include/CLI /usr/include/nlohmann /usr/include/fmt "$dst/prefix/include/"
cp -r /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$dst/prefix/share/cmake/"
fmt_version="$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")/\1/p' /usr/lib/x86_64-linux-gnu/cmake/fmt/fmt-config-version.cmake)"
cat >"$dst/prefix/lib/cmake/fmt/fmt-config.cmake" <<'EOF'
# fmt, header-only (headers carried beside this file's prefix): fmt::fmt-header-only, the target
# quarry uses, and fmt::fmt as the same header-only library.
get_filename_component(_fmt_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
foreach(_fmt_target fmt::fmt-header-only fmt::fmt)
  if(NOT TARGET ${_fmt_target})
    add_library(${_fmt_target} INTERFACE IMPORTED)
    set_target_properties(${_fmt_target} PROPERTIES
      INTERFACE_COMPILE_DEFINITIONS "FMT_HEADER_ONLY=1"
      INTERFACE_COMPILE_FEATURES "cxx_variadic_templates"
      INTERFACE_INCLUDE_DIRECTORIES "${_fmt_prefix}/include")
  endif()
endforeach()
unset(_fmt_prefix)
unset(_fmt_target)
set(fmt_FOUND TRUE)
EOF
cat >"$dst/prefix/lib/cmake/fmt/fmt-config-version.cmake" <<EOF
set(PACKAGE_VERSION "$fmt_version")
if(PACKAGE_FIND_VERSION_MAJOR AND NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "${fmt_version%%.*}")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF

# GoogleTest sources (the CMake project that builds gtest, gtest_main, gmock).
cp -r /usr/src/googletest "$dst/src/googletest"
rm -rf "$dst/src/googletest/docs" "$dst/src/googletest/googletest/docs" "$dst/src/googletest/googlemock/docs"

# Google Benchmark sources, from Debian's source package (cached after the first download).
tarball="$cache/benchmark_${bench_version}.orig.tar.gz"
if [ ! -f "$tarball" ]; then
  mkdir -p "$cache/apt/lists/partial"
  echo "deb-src http://deb.debian.org/debian bookworm main" >"$cache/apt/sources.list"
  o=(-oDir::Etc::SourceList="$cache/apt/sources.list" -oDir::Etc::SourceParts=/dev/null
     -oDir::State::Lists="$cache/apt/lists")
  apt-get "${o[@]}" update >/dev/null
  (cd "$cache" && apt-get "${o[@]}" source --download-only "benchmark=${bench_version}-1" >/dev/null)
fi
tar -xzf "$tarball" -C "$dst/src"
# What a library build needs: CMakeLists.txt, cmake/, include/, src/ (no tests, docs, bindings).
(cd "$dst/src/benchmark-${bench_version}" && rm -rf test docs bindings tools .github .ycm_extra_conf.py \
  WORKSPACE BUILD.bazel setup.py requirements.txt)

# What the LibTorch loop's build there needs beyond the engine's (scripts/gpu_loop_check.sh builds
# quarry and quarry-loop with -DQUARRY_TORCH=ON -DQUARRY_NPZ=ON): libpng, cpp-httplib (found by
# pkg-config), libzip and DLPack, as Debian 12's headers and shared libraries with package files
# written here (relocatable; Debian's name /usr, or list programs the carry leaves out), the
# libraries they load (OpenSSL, Brotli, bzip2), and pkgconf for an image without pkg-config.
lib=/usr/lib/x86_64-linux-gnu
need /usr/include/png.h "apt-get install libpng-dev"
need /usr/include/httplib.h "apt-get install libcpp-httplib-dev"
need /usr/include/zip.h "apt-get install libzip-dev"
need /usr/include/dlpack/dlpack.h "apt-get install libdlpack-dev"
need /usr/bin/pkgconf "apt-get install pkgconf"
need /usr/include/openssl/ssl.h "apt-get install libssl-dev"
need /usr/include/brotli/decode.h "apt-get install libbrotli-dev"
mkdir -p "$dst/prefix/lib/pkgconfig" "$dst/prefix/lib/cmake/libzip" "$dst/prefix/lib/cmake/dlpack" "$dst/prefix/bin"
cp /usr/include/png.h /usr/include/pngconf.h /usr/include/pnglibconf.h /usr/include/httplib.h \
  /usr/include/zip.h /usr/include/zipconf.h "$dst/prefix/include/"
cp -r /usr/include/dlpack "$dst/prefix/include/"
# httplib.h, built with OpenSSL, zlib and Brotli support (the carried library's layout depends on
# it), includes their headers: OpenSSL's (its two architecture-specific ones into the same folder),
# Brotli's and zlib's, found through the package file's -I (zlib's also serve an image that has
# libz.so.1 but no zlib.h: gpu_build_there.sh names them to CMake there).
cp -r /usr/include/openssl /usr/include/brotli "$dst/prefix/include/"
cp /usr/include/x86_64-linux-gnu/openssl/*.h "$dst/prefix/include/openssl/"
cp /usr/include/zlib.h /usr/include/zconf.h "$dst/prefix/include/"
# Plain copies under the names the linker (NAME.so) and the loader (the SONAME) look for.
carry_lib() {  # file link-name soname
  cp -L "$1" "$dst/prefix/lib/$2"
  cp -L "$1" "$dst/prefix/lib/$3"
}
carry_lib $lib/libpng16.so.16 libpng.so libpng16.so.16
carry_lib $lib/libcpp-httplib.so.0.11 libcpp-httplib.so libcpp-httplib.so.0.11
carry_lib $lib/libzip.so.4 libzip.so libzip.so.4
# The libraries those load, in lib/fallback/: appended to LD_LIBRARY_PATH (never put first: the
# image's own OpenSSL, where it has one, stays the one its Python and tools load).
mkdir -p "$dst/prefix/lib/fallback"
for so in libssl.so.3 libcrypto.so.3 libbrotlicommon.so.1 libbrotlidec.so.1 libbrotlienc.so.1 libpkgconf.so.3; do
  cp -L "$lib/$so" "$dst/prefix/lib/fallback/"
done
cp -L /lib/x86_64-linux-gnu/libbz2.so.1.0 "$dst/prefix/lib/fallback/"
# pkgconf, run by a wrapper that finds its library and reads only the carried .pc files.
cp /usr/bin/pkgconf "$dst/prefix/bin/pkgconf.bin"
cat >"$dst/prefix/bin/pkg-config" <<'EOF'
#!/bin/sh
# Debian 12's pkgconf, carried: its library beside it, only the carried package files.
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/../lib/fallback${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  PKG_CONFIG_LIBDIR="$here/../lib/pkgconfig" exec "$here/pkgconf.bin" "$@"
EOF
chmod +x "$dst/prefix/bin/pkg-config"
# No Requires.private: pkg-config would look for OpenSSL's and Brotli's .pc files even for a
# shared link, and the carried library names them itself (DT_NEEDED).
httplib_version="$(dpkg-query -W -f='${Version}' libcpp-httplib-dev | sed 's/[-+~].*//')"
cat >"$dst/prefix/lib/pkgconfig/cpp-httplib.pc" <<EOF
prefix=\${pcfiledir}/../..
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: cpp-httplib
Description: A C++ HTTP/HTTPS server and client library (carried from Debian 12)
Version: $httplib_version
Libs: -L\${libdir} -lcpp-httplib
Libs.private: -pthread
Cflags: -I\${includedir} -DCPPHTTPLIB_OPENSSL_SUPPORT -DCPPHTTPLIB_ZLIB_SUPPORT -DCPPHTTPLIB_BROTLI_SUPPORT
EOF
cat >"$dst/prefix/lib/cmake/libzip/libzip-config.cmake" <<'EOF'
# libzip (carried from Debian 12): the library only, as libzip::zip.
get_filename_component(_zip_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET libzip::zip)
  add_library(libzip::zip SHARED IMPORTED)
  set_target_properties(libzip::zip PROPERTIES
    IMPORTED_LOCATION "${_zip_prefix}/lib/libzip.so.4"
    IMPORTED_SONAME "libzip.so.4"
    INTERFACE_INCLUDE_DIRECTORIES "${_zip_prefix}/include")
endif()
unset(_zip_prefix)
set(libzip_FOUND TRUE)
EOF
cat >"$dst/prefix/lib/cmake/dlpack/dlpackConfig.cmake" <<'EOF'
# DLPack (carried from Debian 12): header-only, as dlpack::dlpack.
get_filename_component(_dlpack_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET dlpack::dlpack)
  add_library(dlpack::dlpack INTERFACE IMPORTED)
  set_target_properties(dlpack::dlpack PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dlpack_prefix}/include")
endif()
unset(_dlpack_prefix)
set(dlpack_FOUND TRUE)
EOF

# PneumoniaMNIST for scripts/gpu_loop_check.sh's simulate rounds (git-ignored under carry/, never
# committed), where ../shared/data has it.
pneumonia="$(cd "$root/.." && pwd)/shared/data/pneumoniamnist/pneumoniamnist.npz"
rm -rf "$root/carry/data"
if [ -f "$pneumonia" ]; then
  mkdir -p "$root/carry/data"
  cp "$pneumonia" "$root/carry/data/"
else
  echo "prepare_device_carry: no $pneumonia: the loop check's simulate rounds will not run" >&2
fi

# BLAS (Fortran sgemm_), found by FindBLAS in the prefix's lib/ (the image has none it can
# find: NumPy's and SciPy's wheels carry symbol-renamed OpenBLAS copies). Plain copies, no
# symbolic links: the linker finds libblas.so, the loader libblas.so.3 (its SONAME).
blas=reference
if [ "${WITH_OPENBLAS:-0}" = 1 ]; then
  ob="$(readlink -f /usr/lib/x86_64-linux-gnu/libopenblas.so.0)"
  need "$ob" "apt-get install libopenblas0-pthread"
  cp "$ob" "$dst/prefix/lib/libopenblas.so"
  cp "$ob" "$dst/prefix/lib/libopenblas.so.0"
  cp /usr/lib/x86_64-linux-gnu/libgfortran.so.5 /usr/lib/x86_64-linux-gnu/libquadmath.so.0 "$dst/prefix/lib/"
  blas="OpenBLAS $(dpkg-query -W -f='${Version}' libopenblas0-pthread)"
else
  cp /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 "$dst/prefix/lib/libblas.so"
  cp /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 "$dst/prefix/lib/libblas.so.3"
  blas="reference BLAS $(dpkg-query -W -f='${Version}' libblas3)"
fi

cat >"$dst/README" <<EOF
Made by scripts/prepare_device_carry.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) from Debian $(cat /etc/debian_version):
CLI11 $(dpkg-query -W -f='${Version}' libcli11-dev), nlohmann-json $(dpkg-query -W -f='${Version}' nlohmann-json3-dev),
fmt $fmt_version (header-only), googletest $(dpkg-query -W -f='${Version}' googletest) sources,
Google Benchmark $bench_version sources, zlib headers $(dpkg-query -W -f='${Version}' zlib1g-dev),
$blas in prefix/lib; for the loop's build (scripts/gpu_loop_check.sh): libpng
$(dpkg-query -W -f='${Version}' libpng-dev), cpp-httplib $httplib_version with OpenSSL and Brotli, libzip
$(dpkg-query -W -f='${Version}' libzip-dev), DLPack $(dpkg-query -W -f='${Version}' libdlpack-dev) and pkgconf
$(dpkg-query -W -f='${Version}' pkgconf) in prefix/.
Used by scripts/gpu_build_there.sh on the device machine (carry: ["carry"]).
EOF

echo "carry/deps: $(du -sh "$dst" | cut -f1) ($(find "$dst" -type f | wc -l) files); carry/ in all: $(du -sh "$root/carry" | cut -f1)"
