#!/usr/bin/env bash
# shellcheck disable=SC2015,SC2317  # A && B || C is intended; cleanup runs via trap
# Usage: scripts/with-services.sh CMD [ARGS...]
#
# Runs CMD with a PostgreSQL 15 and a Redis on free 127.0.0.1 ports, stops both
# afterwards (even if CMD fails) and exits with CMD's exit code. Installs
# PostgreSQL, Redis and Chromium (for the browser tests) from the system's
# packages where missing; Playwright never downloads a browser
# (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1).
# Exports DATABASE_URL, REDIS_URL, PGPORT_TEST, REDIS_PORT_TEST, PG_BIN and
# TEST_SERVICES_DIR (layout: pgdata/ = data dir, pg.log, redis.pid, redis.log,
# anvil.log, services.env = the URLs; when run as root the server runs as the
# `postgres` user). With "anvil" in SERVICES: a local Ethereum node (Foundry's
# Anvil from npm, `npm ci` where node_modules lacks it) and EVM_RPC_URL;
# ANVIL_BIN is its binary (tests start their own nodes with it too).
# With "replica" in SERVICES (and postgres): a streaming replica of that PostgreSQL, a hot standby
# on its own port (pg_basebackup -R), and DATABASE_REPLICA_URL, REPLICA_PORT_TEST (data dir:
# replica/, log: replica.log).
#
# Environment knobs:
#   SERVICES_DIR=path  keep the data there and reuse it next time (`make run`);
#                      unset = a throwaway folder, deleted afterwards (`make test`).
#   SERVICES="postgres redis chromium anvil"  what to install and start (the default).
#   KEEP_URLS=1        a DATABASE_URL / REDIS_URL already set is used as it is,
#                      and that service is not started (`make run` against yours).
#   PG_OPTIONS="-c k=v ..."  more server settings for the throwaway PostgreSQL (benchmarks:
#                      "-c shared_preload_libraries=pg_stat_statements").
# Deliberately no `set -e`: every step checks its own result.
set -u

PG_BIN=/usr/lib/postgresql/15/bin

die() { echo "with-services: $*" >&2; exit 1; }
[ $# -gt 0 ] || die "usage: $0 CMD [ARGS...]"

if [ "$(id -u)" = 0 ]; then SUDO=; AS_PG=(runuser -u postgres --)
else SUDO=$(command -v sudo || true); AS_PG=(); fi

# The system packages the tests need, where missing: PostgreSQL, Redis, and the
# Chromium the browser tests drive (Playwright never downloads a browser).
CHROMIUM=/usr/bin/chromium
SERVICES=${SERVICES:-postgres redis chromium anvil replica}
want() { case " $SERVICES " in *" $1 "*) return 0;; *) return 1;; esac; }
if [ "${KEEP_URLS:-}" = 1 ]; then
  [ -n "${DATABASE_URL:-}" ] && SERVICES=${SERVICES//postgres/}
  [ -n "${REDIS_URL:-}" ] && SERVICES=${SERVICES//redis/}
  [ -n "${EVM_RPC_URL:-}" ] && SERVICES=${SERVICES//anvil/}
fi
MISSING=()
want postgres && { [ -x "$PG_BIN/initdb" ] || MISSING+=(postgresql); }
want redis && { command -v redis-server >/dev/null || MISSING+=(redis-server); }
want chromium && { [ -x "$CHROMIUM" ] || MISSING+=(chromium); }
if [ "${#MISSING[@]}" -gt 0 ]; then
  # Debian's postgresql package may create/start a "main" cluster on 5432; we
  # never use it and leave it alone.
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive \
    $SUDO apt-get install -y -q "${MISSING[@]}" >&2 \
    || die "apt-get install ${MISSING[*]} failed"
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# The local Ethereum node and the Solidity compiler come from npm (package.json pins them;
# package-lock.json fixes the whole tree).
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
export ANVIL_BIN=$ROOT_DIR/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
# axe-core (the accessibility check of the browser tests) comes from the same `npm ci`.
AXE_JS=$ROOT_DIR/node_modules/axe-core/axe.min.js
if { want anvil && [ ! -x "$ANVIL_BIN" ]; } || [ ! -f "$AXE_JS" ]; then
  command -v npm >/dev/null || { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive \
    $SUDO apt-get install -y -q nodejs npm >&2; } || die "apt-get install nodejs npm failed"
  (cd "$ROOT_DIR" && npm ci --no-audit --no-fund >&2) || die "npm ci failed"
  [ -x "$ANVIL_BIN" ] || die "npm ci did not install $ANVIL_BIN"
  [ -f "$AXE_JS" ] || die "npm ci did not install $AXE_JS"
fi

# Two distinct free ports, both bound at once so they cannot collide.
free_ports() {
  python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))'
}

if [ -n "${SERVICES_DIR:-}" ]; then
  # Kept: the data survives a stop (make run); a crash can't corrupt it, so fsync stays on.
  mkdir -p "$SERVICES_DIR" || die "cannot create $SERVICES_DIR"
  DIR=$(cd "$SERVICES_DIR" && pwd) KEEP=1 DURABILITY=''
  if [ "${#AS_PG[@]}" -gt 0 ] && want postgres \
      && ! "${AS_PG[@]}" test -x "$DIR" 2>/dev/null; then
    die "the postgres user cannot reach $DIR: give its parent folders o+x, or set SERVICES_DIR"
  fi
else
  DIR=$(mktemp -d) || die "mktemp failed"
  KEEP='' DURABILITY='-c fsync=off -c synchronous_commit=off -c full_page_writes=off'
fi
[ "${#AS_PG[@]}" -gt 0 ] && chown postgres: "$DIR"
chmod 755 "$DIR"
PGDATA_DIR=$DIR/pgdata
pg() { (cd "$DIR" && "${AS_PG[@]}" "$PG_BIN/$1" "${@:2}"); }  # cwd: postgres may not read ours

PGPORT='' REDISPORT='' REDIS_STARTED='' PG_STARTED='' ANVIL_PID='' REPLICA_STARTED=''
cleanup() {
  # The standby first: stopped after its primary, it would wait for it to come back.
  [ -n "$REPLICA_STARTED" ] && pg pg_ctl stop -D "$DIR/replica" -m immediate -w >/dev/null 2>&1
  if [ -n "$PG_STARTED" ] && [ -f "$PGDATA_DIR/postmaster.pid" ]; then
    # A kept database shuts down cleanly; a throwaway one needs no checkpoint.
    pg pg_ctl stop -D "$PGDATA_DIR" -m "$([ -n "$KEEP" ] && echo fast || echo immediate)" -w \
      >/dev/null 2>&1
  fi
  if [ -n "$REDIS_STARTED" ]; then
    redis-cli -p "$REDISPORT" shutdown nosave >/dev/null 2>&1 \
      || { [ -s "$DIR/redis.pid" ] && kill "$(cat "$DIR/redis.pid")" 2>/dev/null; }
  fi
  [ -n "$ANVIL_PID" ] && kill "$ANVIL_PID" 2>/dev/null && wait "$ANVIL_PID" 2>/dev/null
  if [ -n "$KEEP" ]; then rm -f "$DIR/services.env"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if want postgres; then
if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
  pg initdb -D "$PGDATA_DIR" -A trust -U postgres --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
fi

# With a streaming replica, the primary keeps 1 GB of WAL: a standby that lost its connection
# (the fault tests stop the primary) must find the segments it has not received yet when it
# reconnects, or it never catches up ("requested WAL segment ... has already been removed").
KEEP_WAL=''
want replica && KEEP_WAL='-c wal_keep_size=1GB'

# A port picked by free_ports can still be taken by someone else before we
# bind it (e.g. a parallel run), so retry with fresh ports a few times.
for attempt in 1 2 3; do
  read -r PGPORT REDISPORT < <(free_ports) || die "could not pick ports"
  if pg pg_ctl start -w -t 60 -D "$PGDATA_DIR" -l "$DIR/pg.log" -o "-p $PGPORT \
      -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR $DURABILITY \
      -c max_connections=300 $KEEP_WAL ${PG_OPTIONS:-}" >/dev/null 2>&1; then PG_STARTED=1; break; fi
  PGPORT=''
  [ "$attempt" = 3 ] && { cat "$DIR/pg.log" >&2; die "postgres failed to start"; }
done
fi
[ -n "$REDISPORT" ] || read -r _ REDISPORT < <(free_ports) || die "could not pick ports"

# Redis writes its pidfile only once it has bound the port, so "pidfile
# present and matching the process_id that answers on the port" means the
# server we reach is ours, not a parallel run's that grabbed the port first.
redis_up() {
  [ -s "$DIR/redis.pid" ] && redis-cli -p "$REDISPORT" info server 2>/dev/null \
    | grep -q "^process_id:$(cat "$DIR/redis.pid")"
}
if want redis; then
for attempt in 1 2 3; do
  rm -f "$DIR/redis.pid"
  redis-server --port "$REDISPORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
  for _ in $(seq 50); do redis_up && break 2; sleep 0.1; done
  [ -s "$DIR/redis.pid" ] && kill "$(cat "$DIR/redis.pid")" 2>/dev/null
  [ "$attempt" = 3 ] && { cat "$DIR/redis.log" >&2; die "redis failed to start"; }
  read -r _ REDISPORT < <(free_ports)
done
REDIS_STARTED=1
export REDIS_URL="redis://127.0.0.1:$REDISPORT/0"
fi

if [ -n "$PG_STARTED" ]; then
  if ! "$PG_BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'marketplace'" | grep -q 1; then
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres marketplace \
      || die "createdb marketplace failed"
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/marketplace"
fi

# --- the read replica (issue 17): a streaming hot standby of the PostgreSQL above ---
# The primary runs with PostgreSQL's defaults wal_level=replica and max_wal_senders=10, and
# initdb -A trust lets 127.0.0.1 connect for replication (pg_hba.conf's `replication` lines).
# pg_basebackup -R copies the cluster and writes standby.signal and primary_conninfo; the standby
# then streams every later change (the test databases pytest creates included). About a second.
REPLICA_DIR=$DIR/replica
if want replica && [ -n "$PG_STARTED" ]; then
  if [ ! -f "$REPLICA_DIR/PG_VERSION" ]; then
    pg pg_basebackup -h 127.0.0.1 -p "$PGPORT" -U postgres -D "$REPLICA_DIR" -R -X stream \
      -c fast --no-sync >"$DIR/basebackup.log" 2>&1 \
      || { cat "$DIR/basebackup.log" >&2; die "pg_basebackup failed"; }
  else
    # A kept standby follows the primary on whatever port it has this time.
    echo "primary_conninfo = 'host=127.0.0.1 port=$PGPORT user=postgres'" \
      | "${AS_PG[@]}" tee -a "$REPLICA_DIR/postgresql.auto.conf" >/dev/null
  fi
  for attempt in 1 2 3; do
    read -r REPLICA_PORT _ < <(free_ports) || die "could not pick ports"
    if pg pg_ctl start -w -t 60 -D "$REPLICA_DIR" -l "$DIR/replica.log" -o "-p $REPLICA_PORT \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR $DURABILITY \
        -c max_connections=300 -c hot_standby=on -c hot_standby_feedback=on -c max_standby_streaming_delay=5s" \
        >/dev/null 2>&1; then REPLICA_STARTED=1; break; fi
    [ "$attempt" = 3 ] && { cat "$DIR/replica.log" >&2; die "the replica failed to start"; }
  done
  export DATABASE_REPLICA_URL="postgres://postgres@127.0.0.1:$REPLICA_PORT/marketplace"
  export REPLICA_PORT_TEST=$REPLICA_PORT
fi
# --- end ---
# Anvil: chain id 31337, its ten funded dev accounts from the well-known test mnemonic. Mining:
# one block per transaction (tests and the watcher mine more with anvil_mine), plus one block
# every ANVIL_BLOCK_TIME seconds when set (`make run`: confirmations tick by themselves). A kept
# folder keeps the chain (--state) across restarts.
anvil_up() {
  python3 -c 'import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=json.dumps({"jsonrpc": "2.0", "id": 1,
    "method": "eth_chainId", "params": []}).encode(), headers={"Content-Type": "application/json"})
sys.exit(0 if json.load(urllib.request.urlopen(req, timeout=1)).get("result") else 1)' \
    "http://127.0.0.1:$1" 2>/dev/null
}
if want anvil; then
  ANVIL_ARGS=(--host 127.0.0.1 --chain-id 31337 --silent)
  [ -n "${ANVIL_BLOCK_TIME:-}" ] && ANVIL_ARGS+=(--block-time "$ANVIL_BLOCK_TIME")
  [ -n "$KEEP" ] && ANVIL_ARGS+=(--state "$DIR/anvil-state.json")
  for attempt in 1 2 3; do
    read -r ANVILPORT _ < <(free_ports) || die "could not pick ports"
    "$ANVIL_BIN" "${ANVIL_ARGS[@]}" --port "$ANVILPORT" >"$DIR/anvil.log" 2>&1 &
    ANVIL_PID=$!
    for _ in $(seq 100); do anvil_up "$ANVILPORT" && break 2; sleep 0.1; done
    kill "$ANVIL_PID" 2>/dev/null; ANVIL_PID=''
    [ "$attempt" = 3 ] && { cat "$DIR/anvil.log" >&2; die "anvil failed to start"; }
  done
  export EVM_RPC_URL="http://127.0.0.1:$ANVILPORT"
fi

export PGPORT_TEST=$PGPORT REDIS_PORT_TEST=$REDISPORT PG_BIN TEST_SERVICES_DIR=$DIR
# For other shells while this runs (config/settings/local.py reads it: manage.py verify_ledger).
printf 'DATABASE_URL=%s\nREDIS_URL=%s\nEVM_RPC_URL=%s\n' "${DATABASE_URL:-}" "${REDIS_URL:-}" \
  "${EVM_RPC_URL:-}" >"$DIR/services.env"

"$@"
exit $?  # the EXIT trap runs cleanup and keeps this status
