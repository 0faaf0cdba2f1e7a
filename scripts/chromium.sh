#!/usr/bin/env bash
# What the simulator's report test (tests/integration/test_simulate_report.py) needs to open
# report.html: a headless Chromium (Debian's `chromium` package). Installs it with apt-get when
# missing and we are root, then says whether it is there. Never fails the caller: without
# Chromium the test skips, and fails under CI=true with the reason.
#
#   scripts/chromium.sh      install if needed, then report
set -uo pipefail

say() {
    echo "chromium.sh: $*" >&2
}

if ! command -v chromium >/dev/null 2>&1; then
    if [[ "$(id -u)" != 0 ]]; then
        say "chromium is missing; as root: apt-get install chromium"
    elif ! command -v apt-get >/dev/null 2>&1; then
        say "chromium is missing and there is no apt-get to install it"
    else
        say "installing chromium (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || say "apt-get update failed"
        apt-get install -y -qq --no-install-recommends chromium >/dev/null \
            || say "apt-get install chromium failed"
    fi
fi

if command -v chromium >/dev/null 2>&1; then
    say "ready ($(chromium --version 2>/dev/null || echo chromium))"
fi
exit 0
