#!/usr/bin/env bash
# A private PostgreSQL for the storage tests: installs Debian's `postgresql` if missing, then
# runs a cluster of its own (no systemd, no change to the system's clusters) in
# $WRENN_PG_DIR (default /var/tmp/wrenn/pg), listening on 127.0.0.1:$WRENN_PG_PORT (55432)
# only, with a `wrenn` role (password made once, kept in $WRENN_PG_DIR/password, 0600) that
# may create databases, and a `wrenn` database. Idempotent: a running cluster is reused.
# Prints the connection URL as its only line on stdout (progress goes to stderr), so:
#   export WRENN_TEST_DATABASE_URL=$(scripts/install-postgres.sh)
# The cluster is for tests: fsync is off. Stop it with: pg_ctl -D $WRENN_PG_DIR/data stop
set -euo pipefail

dir="${WRENN_PG_DIR:-/var/tmp/wrenn/pg}"
port="${WRENN_PG_PORT:-55432}"
log() { echo "install-postgres: $*" >&2; }

newest_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
bin="$(newest_bin)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "need root to install the postgresql package"
    exit 1
  fi
  log "installing postgresql"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  bin="$(newest_bin)"
fi

# The server refuses to run as root: as root, it runs as `postgres`; otherwise as ourselves.
if [ "$(id -u)" -eq 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
  owner=postgres
else
  as_pg() { "$@"; }
  owner="$(id -un)"
fi

mkdir -p "$dir"
chmod 0755 "$dir"
# One run at a time (make -j, or two shells).
exec 9>"$dir/.lock"
flock 9

data="$dir/data"
run="$dir/run"
mkdir -p "$run"
chown "$owner" "$run"
chmod 0700 "$run"

if [ ! -s "$data/PG_VERSION" ]; then
  log "creating a cluster in $data"
  rm -rf "$data"
  mkdir -p "$data"
  chown "$owner" "$data"
  chmod 0700 "$data"
  as_pg "$bin/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  cat >>"$data/postgresql.conf" <<EOF

# wrenn test cluster (scripts/install-postgres.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$run'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
fi

if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  log "reusing the cluster running in $data"
else
  log "starting the cluster on 127.0.0.1:$port"
  # Not the lock descriptor: the server would hold it for good.
  as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null 9>&-
fi

password_file="$dir/password"
if [ ! -s "$password_file" ]; then
  (umask 077 && head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$password_file")
fi
password="$(cat "$password_file")"

psql_admin() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$run" -p "$port" -U postgres -d postgres "$@"; }
# The password goes through stdin, never a command line.
psql_admin >/dev/null <<EOF
SELECT 'CREATE ROLE wrenn LOGIN CREATEDB'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wrenn') \gexec
ALTER ROLE wrenn WITH LOGIN CREATEDB PASSWORD '$password';
SELECT 'CREATE DATABASE wrenn OWNER wrenn'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'wrenn') \gexec
EOF

echo "postgres://wrenn:$password@127.0.0.1:$port/wrenn"
