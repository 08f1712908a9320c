#!/usr/bin/env bash
# Makes TO a folder of links to those shared libraries in FROM that this machine's loader does
# not find by itself (not in `ldconfig -p`), and prints TO, for LD_LIBRARY_PATH: a carried
# library is used only where the image has none, never in place of the image's own (a folder
# on LD_LIBRARY_PATH is searched before the loader's cache, wherever it stands in the list).
# Used by gpu_build_there.sh and gpu_loop_check.sh for carry/deps/prefix/lib/fallback/.
#
#   scripts/missing_libs.sh FROM TO
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: scripts/missing_libs.sh FROM TO" >&2; exit 2; }
from="$1" to="$2"
rm -rf "$to"
mkdir -p "$to"
known="$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true) | awk 'NR > 1 && /x86-64/ {print $1}')"
for f in "$from"/*.so*; do
  [ -e "$f" ] || continue
  so="$(basename "$f")"
  grep -qxF "$so" <<<"$known" || ln -s "$(readlink -f "$f")" "$to/$so"
done
echo "$to"
