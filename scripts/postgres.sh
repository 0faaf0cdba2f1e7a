#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests and benchmarks, on 127.0.0.1 and a free port.
#
#   scripts/postgres.sh start   install PostgreSQL if needed (Debian, as root), create a cluster
#                               under .pg/, start it, create a database and print its URL
#   scripts/postgres.sh url     print the running cluster's URL
#   scripts/postgres.sh stop    stop the cluster and delete it
#
# The cluster trusts local connections (it listens on loopback only and holds test data) and
# keeps PostgreSQL's durable defaults (fsync, synchronous_commit). Its default collation is a
# linguistic ICU one where the server supports it, so a query that relied on the database
# collation instead of byte order would fail the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE="${PULLKV_PG_DIR:-$PWD/.pg}"
DATABASE="pullkv_test"
SUPERUSER="postgres"

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

# The newest installed server's bin folder (Debian keeps them under /usr/lib/postgresql).
bin_dir() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$found" && -x "$found/initdb" ]]; then
        echo "$found"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

install_postgres() {
    [[ -n "$(bin_dir)" ]] && return 0
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed; run as root or: apt-get install postgresql"
    echo "postgres.sh: installing PostgreSQL (apt-get)" >&2
    # Debian's package would create and start a system-wide cluster; we only need the binaries.
    # (A drop-in file, not createcluster.conf itself, which the package ships as a conffile.)
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/pullkv-tests.conf
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    [[ -n "$(bin_dir)" ]] || die "apt-get installed no initdb"
}

# Run a PostgreSQL program as the cluster's owner: the postgres user when we are root
# (PostgreSQL refuses to run as root), else ourselves.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

url() {
    echo "postgresql://$SUPERUSER@127.0.0.1:$(cat "$STATE/port")/$DATABASE"
}

running() {
    [[ -f "$STATE/root" && -f "$STATE/port" ]] || return 1
    local bin
    bin="$(bin_dir)"
    [[ -n "$bin" ]] && as_owner "$bin/pg_ctl" -D "$(cat "$STATE/root")/data" status >/dev/null 2>&1
}

# The folder holding the cluster must be reachable by the postgres user; a checkout under a
# private home folder is not, so fall back to one under /tmp (the state file says where).
cluster_root() {
    local root="$STATE/cluster"
    mkdir -p "$root"
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$root"
        if ! runuser -u postgres -- test -w "$root"; then
            rm -rf "$root"
            root="$(mktemp -d /tmp/pullkv-pg.XXXXXX)"
            chown postgres: "$root"
        fi
    fi
    echo "$root"
}

start() {
    if running; then
        url
        return 0
    fi
    install_postgres
    stop_quietly
    local bin root port
    bin="$(bin_dir)"
    mkdir -p "$STATE"
    root="$(cluster_root)"
    echo "$root" >"$STATE/root"
    local init=(-D "$root/data" -U "$SUPERUSER" --auth=trust --encoding=UTF8 --no-sync)
    if ! as_owner "$bin/initdb" "${init[@]}" --locale=C.UTF-8 --locale-provider=icu \
        --icu-locale=en-US >"$root/initdb.log" 2>&1; then
        rm -rf "$root/data"
        as_owner "$bin/initdb" "${init[@]}" --locale=C.UTF-8 >"$root/initdb.log" 2>&1 ||
            die "initdb failed: $(cat "$root/initdb.log")"
    fi
    port="$(free_port)"
    echo "$port" >"$STATE/port"
    as_owner "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 -o \
        "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='' \
         -c max_connections=300 -c shared_buffers=128MB" start >/dev/null ||
        die "the server did not start: $(tail -n 20 "$root/server.log" 2>/dev/null)"
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$SUPERUSER" "$DATABASE"
    url
}

stop_quietly() {
    if [[ -f "$STATE/root" ]]; then
        local root bin
        root="$(cat "$STATE/root")"
        bin="$(bin_dir)"
        if [[ -n "$bin" && -d "$root/data" ]]; then
            as_owner "$bin/pg_ctl" -D "$root/data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$root"
    fi
    rm -rf "$STATE"
}

case "${1:-}" in
    start) start ;;
    url) running || die "not running (scripts/postgres.sh start)"; url ;;
    stop) stop_quietly ;;
    *)
        echo "usage: scripts/postgres.sh start|url|stop" >&2
        exit 2
        ;;
esac
