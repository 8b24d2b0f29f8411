#!/usr/bin/env bash
# shellcheck disable=SC2015,SC2317  # A && B || C is intended; cleanup runs via trap
# Usage: scripts/with-services.sh CMD [ARGS...]
#
# Runs CMD with a throwaway PostgreSQL 15 and Redis on free 127.0.0.1 ports,
# stops both afterwards (even if CMD fails) and exits with CMD's exit code.
# Installs PostgreSQL, Redis and Chromium (for the browser tests) from the
# system's packages where missing; Playwright never downloads a browser
# (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1).
# Exports DATABASE_URL, REDIS_URL, PGPORT_TEST, REDIS_PORT_TEST, PG_BIN and
# TEST_SERVICES_DIR (layout: pgdata/ = data dir, pg.log, redis.pid, redis.log;
# when run as root the server runs as the `postgres` user).
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
MISSING=()
[ -x "$PG_BIN/initdb" ] || MISSING+=(postgresql)
command -v redis-server >/dev/null || MISSING+=(redis-server)
[ -x "$CHROMIUM" ] || MISSING+=(chromium)
if [ "${#MISSING[@]}" -gt 0 ]; then
  # Debian's postgresql package may create/start a "main" cluster on 5432; we
  # never use it and leave it alone.
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive \
    $SUDO apt-get install -y -q "${MISSING[@]}" >&2 \
    || die "apt-get install ${MISSING[*]} failed"
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# Two distinct free ports, both bound at once so they cannot collide.
free_ports() {
  python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))'
}

DIR=$(mktemp -d) || die "mktemp failed"
[ "${#AS_PG[@]}" -gt 0 ] && chown postgres: "$DIR"
chmod 755 "$DIR"
PGDATA_DIR=$DIR/pgdata
pg() { (cd "$DIR" && "${AS_PG[@]}" "$PG_BIN/$1" "${@:2}"); }  # cwd: postgres may not read ours

REDISPORT='' REDIS_STARTED=''
cleanup() {
  [ -f "$PGDATA_DIR/postmaster.pid" ] && pg pg_ctl stop -D "$PGDATA_DIR" -m immediate -w >/dev/null 2>&1
  if [ -n "$REDIS_STARTED" ]; then
    redis-cli -p "$REDISPORT" shutdown nosave >/dev/null 2>&1 \
      || { [ -s "$DIR/redis.pid" ] && kill "$(cat "$DIR/redis.pid")" 2>/dev/null; }
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg initdb -D "$PGDATA_DIR" -A trust -U postgres --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 \
  || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }

# A port picked by free_ports can still be taken by someone else before we
# bind it (e.g. a parallel run), so retry with fresh ports a few times.
for attempt in 1 2 3; do
  read -r PGPORT REDISPORT < <(free_ports) || die "could not pick ports"
  if pg pg_ctl start -w -t 60 -D "$PGDATA_DIR" -l "$DIR/pg.log" -o "-p $PGPORT \
      -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR \
      -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
      -c max_connections=300" >/dev/null 2>&1; then break; fi
  PGPORT=''
  [ "$attempt" = 3 ] && { cat "$DIR/pg.log" >&2; die "postgres failed to start"; }
done

# Redis writes its pidfile only once it has bound the port, so "pidfile
# present and matching the process_id that answers on the port" means the
# server we reach is ours, not a parallel run's that grabbed the port first.
redis_up() {
  [ -s "$DIR/redis.pid" ] && redis-cli -p "$REDISPORT" info server 2>/dev/null \
    | grep -q "^process_id:$(cat "$DIR/redis.pid")"
}
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

"$PG_BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres marketplace \
  || die "createdb marketplace failed"

export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/marketplace"
export REDIS_URL="redis://127.0.0.1:$REDISPORT/0"
export PGPORT_TEST=$PGPORT REDIS_PORT_TEST=$REDISPORT PG_BIN TEST_SERVICES_DIR=$DIR

"$@"
exit $?  # the EXIT trap runs cleanup and keeps this status
