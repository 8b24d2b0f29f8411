#!/usr/bin/env bash
# Local dev server (called by `make run`): migrate, seed demo data, and, when
# DATABASE_URL and REDIS_URL are both set, Celery worker + beat alongside.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

$PY manage.py migrate --noinput
$PY manage.py seed_demo

pids=()
# Background jobs of a non-interactive shell ignore Ctrl-C, so stop them here.
trap '[ ${#pids[@]} -eq 0 ] || { kill "${pids[@]}" 2>/dev/null; wait; }' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ -n "${DATABASE_URL:-}" ] && [ -n "${REDIS_URL:-}" ]; then
  .venv/bin/celery -A config worker -l info & pids+=($!)
  # Keep beat's schedule state file out of the work tree.
  .venv/bin/celery -A config beat -l info \
    --schedule "${TMPDIR:-/tmp}/marketplace-celerybeat-schedule" & pids+=($!)
else
  # No broker: tasks run in-process, and this loop stands in for beat (expiry, sealing, sweeps).
  $PY manage.py run_periodic & pids+=($!)
fi

$PY manage.py runserver 127.0.0.1:8000
