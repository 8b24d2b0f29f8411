"""The Celery app. Settlement is at-least-once by design: exactly-once effects come from the
idempotency keys and outbox rows in PostgreSQL, never from trusting the broker."""

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("marketplace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Database connections between tasks: borrowed from the process's psycopg pool, given back.
#
# Celery's Django fixup closes every connection before and after each task, and in a prefork
# child it also closes Django's connection *pool* (celery/celery#10554). Every task then opened a
# new PostgreSQL session: a backend forked, authenticated, its time zone set and its caches warmed,
# ~10 sessions per trade under bench/load.py, most of the worker's and much of the database's CPU.
# The fixup's own knob turns its per-task closing off (it closes only every 2 x DB_REUSE_MAX
# tasks); it still closes the pool a forked child inherits (worker_process_init), as it must. The
# handlers below do what a request does instead: give the connection back to the pool, or drop
# it if it broke (a database restart). The pool checks a connection before lending it
# (CONN_HEALTH_CHECKS), so a task after a restart gets a live one.
app.conf.CELERY_DB_REUSE_MAX = 10**9


def _connections_back_to_pool(task: Any = None, **kwargs: Any) -> None:
    request = getattr(task, "request", None)
    if getattr(request, "is_eager", False):
        return  # an eager task runs inside its caller's request or transaction
    from django.db import close_old_connections

    close_old_connections()


signals.task_prerun.connect(_connections_back_to_pool, weak=False)
signals.task_postrun.connect(_connections_back_to_pool, weak=False)


# A pool child leaves with os._exit once it has sent worker_process_shutdown (billiard), so no
# atexit hook runs in it: it sends what its outbox publisher still holds for their linger (the
# emails and settlements its tasks queued) here, as a web process does at exit.
def _publish_held(**kwargs: Any) -> None:
    from common.outbox import publish_held_at_exit

    publish_held_at_exit()


signals.worker_process_shutdown.connect(_publish_held, weak=False)
