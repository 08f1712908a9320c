#!/usr/bin/env bash
# The quick start's first command: installs what is missing, builds, and runs the main job on
# the built-in default: `quarry simulate` on the synthetic image pool (the whole active-learning
# loop, random sampling against entropy, margin, BALD and BADGE), then prints where the summary
# and the learning curves are. Without arguments it runs one repeat (a few minutes); arguments
# go to `quarry simulate` instead (`--repeats 3` is the full protocol).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh"
"$root/scripts/build.sh" >/dev/null
[ $# -eq 0 ] && set -- --repeats 1
exec "$root/build/quarry" simulate "$@"
