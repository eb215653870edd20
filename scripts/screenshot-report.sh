#!/usr/bin/env bash
# Render a run report (report.html) to PNG with headless Chromium, to look at it.
#
#   scripts/screenshot-report.sh RUN_DIR/report.html out.png [WIDTH,HEIGHT]
#
# Needs Debian's chromium (/usr/bin/chromium or $CHROMIUM). No network: the page is self-contained,
# and every background service of the browser is switched off. Bounded by a timeout.
set -euo pipefail
html=${1:?usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]}
out=${2:?usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]}
size=${3:-1400,2000}
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [[ -z "$browser" ]]; then
  echo "chromium not found (set CHROMIUM)" >&2
  exit 2
fi
html=$(realpath "$html")
out=$(realpath -m "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
timeout 90 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --disable-extensions \
  --hide-scrollbars --user-data-dir="$profile" --window-size="$size" --screenshot="$out" \
  "file://$html" >/dev/null 2>&1 || true
if [[ ! -s "$out" ]]; then
  echo "no screenshot written to $out" >&2
  exit 1
fi
echo "$out"
