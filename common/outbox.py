"""Publishing a task for a row that is already committed (an outbox row: a settlement, a
withdrawal, a webhook delivery), off the request's path.

The row in PostgreSQL is the promise; the broker message only makes it happen sooner, and a
sweeper re-queues whatever was never published. So a request must not wait on the broker: a
hanging Redis (connects succeed, replies never come) would otherwise hold every release for the
broker's timeouts. Each process hands its messages to one daemon thread through a bounded queue;
when the queue is full the message is dropped with a warning (the sweeper has it).

A task declared with `outbox_coalesce` (`@shared_task(..., outbox_coalesce=0.25)`: seconds, or
True for BATCH_LINGER) takes one argument, a list of row ids: the thread holds a message of it
open that long and merges into it the ids of every such call that it gets meanwhile (BATCH_CAP
ids at most: a full message goes out at once), sent with the context variables of its first
call. Other tasks keep their order and one message each, never held back. Under load one message
then carries the rows of many requests of the process, and the worker runs one task for them
instead of one each.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
# Most ids in one coalesced message; a full one goes out at once.
BATCH_CAP = 500
# How long a coalesced message is held open for more ids when its task says only
# `outbox_coalesce=True` (a number of seconds there is that task's own).
BATCH_LINGER = 0.05
# Most items the thread takes from its queue at once.
DRAIN_MAX = 5_000


class _Item(NamedTuple):
    context: contextvars.Context
    task: Any
    args: tuple[Any, ...]


class _Flush(NamedTuple):
    """publish_pending's request: publish every open message now, then set `done`."""

    done: threading.Event


@dataclass
class _Batch:
    """A coalesced message being filled: the context of its first call, the ids (an ordered
    set), and when it goes out."""

    context: contextvars.Context
    task: Any
    deadline: float
    ids: dict[Any, None] = field(default_factory=dict)


_lock = threading.Lock()
_queue: queue.Queue[_Item | _Flush] | None = None
_owner_pid: int | None = None


def coalesced(task: Any) -> bool:
    """Whether this task's messages are merged (`outbox_coalesce`: one list of ids)."""
    return linger_of(task) is not None


def linger_of(task: Any) -> float | None:
    """How long a message of this task waits for more ids; None: not coalesced."""
    marker = getattr(task, "outbox_coalesce", None)
    if marker is True:
        return BATCH_LINGER
    if isinstance(marker, (int, float)) and not isinstance(marker, bool):
        return float(marker)
    return None


def publish_after_commit(task: Any, *args: Any) -> None:
    """Queue `task(*args)` on the broker without waiting for it; never raises. For a coalesced
    task, `args` is one list of ids, which may go out merged with other calls' ids."""
    try:
        if coalesced(task):
            (ids,) = args
            args = (list(ids),)
            if not args[0]:
                return
        # With the caller's context variables (the request id of its log lines goes with the task).
        _publisher().put_nowait(_Item(contextvars.copy_context(), task, args))
    except queue.Full:
        logger.warning("publish queue full; %s%r left to its sweeper", task.name, args)
    except Exception:
        logger.warning("could not queue %s%r; its sweeper will", task.name, args, exc_info=True)


def _publisher() -> queue.Queue[_Item | _Flush]:
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


def publish_held_at_exit(**_: Any) -> None:
    """A process that exits cleanly (a gunicorn worker recycled or stopped, through atexit; a
    Celery pool child, which leaves with os._exit and so runs no atexit, through the
    worker_process_shutdown signal, config/celery.py) first sends the messages its publisher
    still holds for their linger: else their rows would wait for their sweeper. (A process
    killed still loses them to the sweeper.)"""
    if not publish_pending(timeout=2.0):
        logger.warning("outbox publisher: messages still held at exit; their sweepers have them")


atexit.register(publish_held_at_exit)


def publish_pending(timeout: float = 10.0) -> bool:
    """Publish at once whatever this process's thread still holds (merged messages waiting for
    their linger included) and wait until it has; True when it did within `timeout`. For a test
    that must know nothing of its own is still to reach the worker (before it waits for the
    worker to go idle and empties the database)."""
    if _queue is None or _owner_pid != os.getpid():
        return True  # this process never queued anything
    done = threading.Event()
    try:
        _queue.put(_Flush(done), timeout=timeout)
    except queue.Full:
        return False
    return done.wait(timeout)


def _drain(pending: queue.Queue[_Item | _Flush]) -> None:
    open_batches: dict[str, list[_Batch]] = {}
    while True:
        try:
            _drain_round(pending, open_batches)
        except Exception:  # never let the thread die: later messages would all be lost
            logger.exception("outbox publisher: unexpected error")


def _drain_round(
    pending: queue.Queue[_Item | _Flush], open_batches: dict[str, list[_Batch]]
) -> None:
    """Wait for the next item, or until the first open message is due; take whatever else is
    waiting; publish the plain items in order and add the coalesced ones' ids to the open
    messages; then publish the messages that are due or full (all of them when asked to by
    publish_pending, whose request is answered last)."""
    timeout = None
    if open_batches:
        first = min(b.deadline for batches in open_batches.values() for b in batches)
        timeout = max(0.0, first - time.monotonic())
    taken = _take(pending, timeout=timeout)
    flushes = [item for item in taken if isinstance(item, _Flush)]
    _route([item for item in taken if isinstance(item, _Item)], open_batches)
    now = time.monotonic()
    for name in list(open_batches):
        waiting = []
        for batch in open_batches[name]:
            if flushes or batch.deadline <= now or len(batch.ids) >= BATCH_CAP:
                batch.context.run(_publish, batch.task, (list(batch.ids),))
            else:
                waiting.append(batch)
        if waiting:
            open_batches[name] = waiting
        else:
            del open_batches[name]
    for flush in flushes:
        flush.done.set()
    for _ in taken:
        pending.task_done()


def _take(pending: queue.Queue[_Item | _Flush], *, timeout: float | None) -> list[_Item | _Flush]:
    """The next item (waiting up to `timeout`, None: for ever) and whatever else is waiting."""
    try:
        items = [pending.get(timeout=timeout)]
    except queue.Empty:
        return []
    try:
        while len(items) < DRAIN_MAX:
            items.append(pending.get_nowait())
    except queue.Empty:
        pass
    return items


def _route(items: list[_Item], open_batches: dict[str, list[_Batch]]) -> None:
    """Publish the plain items now, in order; add the coalesced ones' ids to the open message of
    their task (a full one stays as is and a new one is opened after it; an id already in the
    open message, a re-queue of a row still waiting, is not added twice)."""
    for item in items:
        linger = linger_of(item.task)
        if linger is None:
            item.context.run(_publish, item.task, item.args)
            continue
        batches = open_batches.setdefault(item.task.name, [])
        for id_ in item.args[0]:
            if not batches or len(batches[-1].ids) >= BATCH_CAP:
                # With the context of the call whose id comes first.
                batches.append(_Batch(item.context, item.task, time.monotonic() + linger))
            batches[-1].ids[id_] = None


def _publish(task: Any, args: tuple[Any, ...]) -> None:
    try:
        task.apply_async(args)
    except Exception:
        logger.warning("could not queue %s%r; its sweeper will", task.name, args, exc_info=True)
