"""Publishing a task for a row that is already committed (an outbox row: a settlement, a
withdrawal, a webhook delivery), off the request's path.

The row in PostgreSQL is the promise; the broker message only makes it happen sooner, and a
sweeper re-queues whatever was never published. So a request must not wait on the broker: a
hanging Redis (connects succeed, replies never come) would otherwise hold every release for the
broker's timeouts. Each process hands its messages to one daemon thread through a bounded queue;
when the queue is full the message is dropped with a warning (the sweeper has it).
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
from typing import Any

logger = logging.getLogger(__name__)

QUEUE_SIZE = 10_000

_lock = threading.Lock()
_queue: queue.Queue[tuple[contextvars.Context, tuple[Any, tuple[Any, ...]]]] | None = None
_owner_pid: int | None = None


def publish_after_commit(task: Any, *args: Any) -> None:
    """Queue `task(*args)` on the broker without waiting for it; never raises."""
    try:
        # With the caller's context variables (the request id of its log lines goes with the task).
        _publisher().put_nowait((contextvars.copy_context(), (task, args)))
    except queue.Full:
        logger.warning("publish queue full; %s%r left to its sweeper", task.name, args)


def _publisher() -> queue.Queue[tuple[contextvars.Context, tuple[Any, tuple[Any, ...]]]]:
    global _queue, _owner_pid
    # A forked child (gunicorn, Celery prefork) inherits the queue but not the thread.
    if _queue is None or _owner_pid != os.getpid():
        with _lock:
            if _queue is None or _owner_pid != os.getpid():
                _queue = queue.Queue(maxsize=QUEUE_SIZE)
                _owner_pid = os.getpid()
                threading.Thread(
                    target=_drain, args=(_queue,), name="outbox-publisher", daemon=True
                ).start()
    return _queue


def _drain(pending: queue.Queue[tuple[contextvars.Context, tuple[Any, tuple[Any, ...]]]]) -> None:
    while True:
        context, (task, args) = pending.get()
        context.run(_publish, task, args)
        pending.task_done()


def _publish(task: Any, args: tuple[Any, ...]) -> None:
    try:
        task.apply_async(args)
    except Exception:
        logger.warning("could not queue %s%r; its sweeper will", task.name, args, exc_info=True)
