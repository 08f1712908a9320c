#!/usr/bin/env bash
# The quick start's first command: installs what is missing, builds, and runs the main job on
# the built-in default (a synthetic pool of 1M samples: score by entropy, select 100).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh"
"$root/scripts/build.sh" >/dev/null
exec "$root/build/quarry" demo "$@"
