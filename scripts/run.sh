#!/usr/bin/env bash
# `make run`: the real shape on this machine. PostgreSQL and Redis (installed from the system's
# packages where missing; data kept in .data/ of the clone, so a restart keeps users, trades and
# the ledger), then migrations, the demo data (once), a Celery worker, Celery beat and the web
# server on http://127.0.0.1:8000. With DATABASE_URL and/or REDIS_URL set, those are used instead
# of starting ours. Ctrl-C stops everything this started.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != --inside ]; then
  export SERVICES="postgres redis anvil" KEEP_URLS=1 SERVICES_DIR=${SERVICES_DIR:-$PWD/.data}
  # The local chain mines a block every 2 s, so a deposit's confirmations tick by themselves.
  export ANVIL_BLOCK_TIME=${ANVIL_BLOCK_TIME:-2}
  exec scripts/with-services.sh "$0" --inside
fi

PY=.venv/bin/python
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.local}
$PY manage.py compilecatalogs  # issue 20: the .mo files from locale/*.po (Babel)
$PY manage.py migrate --noinput
$PY manage.py seed_demo
$PY manage.py seed_lending_demo
# --- the local chain (docs/chain.md) ---
# With no EVM_XPUB of its own, make run uses the LOCAL DEV KEYS of the public test mnemonic
# (ledger/evm/devchain.py): TestUSD deployed once, and the worker alone gets the private keys.
WORKER_ENV=()
if [ -n "${EVM_RPC_URL:-}" ] && [ -z "${EVM_XPUB:-}" ]; then
  $PY manage.py evm_setup
  mapfile -t WORKER_ENV < <($PY -m ledger.evm.devchain worker-env)
fi
# --- end local chain ---

pids=()
# Background jobs of a non-interactive shell ignore Ctrl-C, so stop them here.
trap '[ ${#pids[@]} -eq 0 ] || { kill "${pids[@]}" 2>/dev/null; wait; }' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
env "${WORKER_ENV[@]}" .venv/bin/celery -A config worker -l info --concurrency 2 & pids+=($!)
# Beat's schedule state lives with the rest of the local data, out of the work tree's way.
.venv/bin/celery -A config beat -l info \
  --schedule "${TEST_SERVICES_DIR:-${TMPDIR:-/tmp}}/celerybeat-schedule" & pids+=($!)
# issue 18: the WebSocket server (uvicorn, notifications/live) on its own port; pages learn
# its URL from LIVE_WS_URL.
export LIVE_WS_URL=${LIVE_WS_URL:-ws://127.0.0.1:8001/ws/v1/live/}
.venv/bin/uvicorn config.asgi:application --host 127.0.0.1 --port 8001 --ws-max-size 65536 \
  --no-access-log & pids+=($!)
$PY manage.py runserver 127.0.0.1:8000 --noreload & pids+=($!)

cat <<MSG

  The marketplace runs on http://127.0.0.1:8000  (admin: http://127.0.0.1:8000/admin/)
  Live push (WebSockets): ${LIVE_WS_URL}; bots: ws://127.0.0.1:8001/ws/v1/stream/
  Demo logins (password demo-pass-123): alice and bob (traders), mod (moderator), admin (superuser)
  Data: ${TEST_SERVICES_DIR:-elsewhere} (PostgreSQL, kept across restarts; make reset-data wipes it)
  Database: ${DATABASE_URL}    Broker: ${REDIS_URL}
  Chain: ${EVM_RPC_URL:-none} (a block every ${ANVIL_BLOCK_TIME}s). Send test coins to a user's
    deposit address: .venv/bin/python manage.py faucet alice ETH 1   (or USDT 100)
  Ctrl-C stops the web and WebSocket servers, the Celery worker and beat, PostgreSQL, Redis and
    the chain.

MSG
# Whichever process ends first (or Ctrl-C) stops the lot.
wait -n "${pids[@]}"
