#!/usr/bin/env bash
# A private PostgreSQL server (Debian's package) for the multi-worker tests and benchmark.
# Idempotent: starts it once, then prints the same lines. Prints shell lines to eval:
#   eval "$(scripts/postgres.sh)"   # sets AUTOTUNE_TEST_POSTGRES (a URL without password)
#                                   # and PGPASSWORD (read by libpq, never put in the URL)
# Env: AUTOTUNE_PG_DIR (default /tmp/autotune-pg), AUTOTUNE_PG_PORT (default 55432).
set -euo pipefail
dir="${AUTOTUNE_PG_DIR:-/tmp/autotune-pg}"
port="${AUTOTUNE_PG_PORT:-55432}"

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    else
        echo "scripts/postgres.sh: needs Debian's PostgreSQL: sudo apt-get install postgresql" >&2
        exit 1
    fi
fi
# PostgreSQL refuses to run as root: as root, the cluster belongs to the package's user
as=()
if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi

if [ ! -s "$dir/data/PG_VERSION" ]; then
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    "${as[@]}" bash -c "umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > '$dir/password'"
    "${as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 >/dev/null
fi
if ! "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=200" >/dev/null
fi
password=$("${as[@]}" cat "$dir/password")
psql=("${as[@]}" "$bindir/psql" -h "$dir" -p "$port" -U postgres -qtA -v ON_ERROR_STOP=1)
if [ -z "$("${psql[@]}" -c "select 1 from pg_roles where rolname='autotune'")" ]; then
    "${psql[@]}" -c "create role autotune login password '$password' createdb" >/dev/null
    "${psql[@]}" -c "create database autotune owner autotune" >/dev/null
fi
echo "export AUTOTUNE_TEST_POSTGRES=postgresql+psycopg://autotune@127.0.0.1:$port/autotune"
echo "export PGPASSWORD=$password"
