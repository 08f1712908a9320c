#!/bin/sh
# The labeling page in a real browser: installs playwright-core (npm, pinned by package-lock.json)
# into WORK, then runs label_page.mjs against QUARRY_LOOP in Debian's Chromium, headless.
# Exit 77 (a skip for CTest) with a message where Chromium or Node.js is not there or Chromium
# cannot start.
# usage: run.sh QUARRY_LOOP WORK
set -eu
loop="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
chromium="${CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$chromium" ]; then
  echo "SKIP: no Chromium to drive (Debian: apt-get install chromium; or set CHROMIUM)"
  exit 77
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: Node.js and npm are needed to drive Chromium (playwright-core)"
  exit 77
fi
mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here/label_page.mjs" "$work/"
want="$(node -e 'console.log(require(process.argv[1]).dependencies["playwright-core"])' "$here/package.json")"
have="$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) { console.log("") }' \
  "$work/node_modules/playwright-core/package.json")"
if [ "$want" != "$have" ]; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
fi
cd "$work"
exec node label_page.mjs "$loop" "$work" "$chromium"
