#!/usr/bin/env bash
# Provision headless Chromium (Debian's `chromium` package) for the report tests, which open the
# weekly report's HTML in a real browser and check that every image loaded, and for the
# screenshot of the demo report in docs/.
#
# Idempotent: does nothing when a working chromium is already installed. Prints the binary path
# and version on its last line. Flags the tests use (see tests/report/chromium.py):
#   --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
#   --user-data-dir=<fresh temporary directory>
# Usage: scripts/provision/chromium.sh
set -euo pipefail

CACHE_DIR="${CAPACITYD_CI_CACHE:-/var/cache/capacityd-ci}"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.chromium.lock"
flock 9   # one apt-get at a time; a second caller waits, then finds chromium installed

find_chromium() {
    command -v chromium || command -v chromium-browser || true
}

works() {
    local bin=$1
    [[ -n "$bin" ]] && "$bin" --headless --no-sandbox --disable-gpu --version >/dev/null 2>&1
}

BIN=$(find_chromium)
if works "$BIN"; then
    echo "chromium: already installed: $BIN ($("$BIN" --version 2>/dev/null))"
    exit 0
fi

echo "chromium: installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fonts-dejavu-core gives text a real font in screenshots; the package pulls the rest it needs.
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-liberation >/dev/null

BIN=$(find_chromium)
if ! works "$BIN"; then
    echo "chromium: installed but '$BIN --headless --version' fails" >&2
    exit 1
fi
echo "chromium: ready: $BIN ($("$BIN" --version 2>/dev/null))"
