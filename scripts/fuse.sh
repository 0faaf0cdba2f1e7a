#!/usr/bin/env bash
# What the power-loss tests (tests/powerloss) need to mount their FUSE file system:
# libfuse 2 (which fusepy, installed by `pip install -e .[dev]`, loads) and fusermount (from
# Debian's `fuse` package). Installs them with apt-get when missing and we are root, then says
# whether /dev/fuse is there. Never fails the caller: without FUSE the tests skip, and fail
# under CI=true with the reason.
#
#   scripts/fuse.sh          install if needed, then report
set -uo pipefail

say() {
    echo "fuse.sh: $*" >&2
}

have_libfuse2() {
    ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2'
}

if ! have_libfuse2 || ! command -v fusermount >/dev/null 2>&1; then
    if [[ "$(id -u)" != 0 ]]; then
        say "libfuse2 or fusermount is missing; as root: apt-get install fuse libfuse2"
    elif ! command -v apt-get >/dev/null 2>&1; then
        say "libfuse2 or fusermount is missing and there is no apt-get to install them"
    else
        say "installing libfuse2 and fusermount (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || say "apt-get update failed"
        # Debian 13 renamed the library package libfuse2t64. `fuse` (fusermount for libfuse 2)
        # conflicts with `fuse3`, which apt would remove: fusermount3 is not what libfuse 2
        # calls, so that is the one we need.
        if apt-cache show libfuse2t64 >/dev/null 2>&1; then
            lib=libfuse2t64
        else
            lib=libfuse2
        fi
        apt-get install -y -qq --no-install-recommends fuse "$lib" >/dev/null \
            || say "apt-get install fuse $lib failed"
    fi
fi

if [[ ! -e /dev/fuse ]]; then
    say "/dev/fuse does not exist: this machine cannot mount FUSE file systems"
elif have_libfuse2 && command -v fusermount >/dev/null 2>&1; then
    say "ready (libfuse2, fusermount, /dev/fuse)"
fi
exit 0
