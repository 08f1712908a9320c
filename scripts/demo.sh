#!/usr/bin/env bash
# The quick start's first command: installs what is missing, builds the two programs (quarry and
# quarry-loop, with the build's progress), and runs `quarry simulate` on the built-in synthetic
# image pool: the whole active-learning loop, random sampling against entropy and BADGE, a small
# CNN retrained every round, one repeat; then a table of each strategy's label efficiency and the
# learning curves (quarry-simulate/summary.md, curves.svg). About 3.3 minutes on 2 CPU cores after
# the build. Arguments replace the default and go to `quarry simulate` (`--repeats 3` with the
# default strategies is the full protocol: random, entropy, margin, BALD and BADGE, 10 rounds).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh"
echo "demo: building quarry and quarry-loop in $root/build (the first build takes several minutes)" >&2
BUILD_TARGETS=quarry_cli "$root/scripts/build.sh"
[ $# -eq 0 ] && set -- --strategies random,entropy,badge --rounds 5 --repeats 1
exec "$root/build/quarry" simulate "$@"
