#!/usr/bin/env bash
# Label in your browser: installs what is missing, builds quarry and quarry-loop in build/, makes
# a labeling project on the built-in synthetic pool (4000 images of 4 shapes) in ./label-demo
# unless it is there already (its labels are kept between runs), and serves its labeling page on
# this machine: open the address it prints. Ctrl-C stops it. Arguments go to `quarry project
# serve` (--port 0 picks a free port).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh"
echo "label: building quarry and quarry-loop in $root/build (the first build takes several minutes)" >&2
BUILD_TARGETS=quarry_cli "$root/scripts/build.sh" >&2
project="${QUARRY_LABEL_DEMO:-label-demo}"
if [ ! -e "$project/project.json" ]; then
  "$root/build/quarry" project init "$project" --dataset synthetic --classes ring,cross,square,bar
fi
exec "$root/build/quarry" project serve "$project" "$@"
