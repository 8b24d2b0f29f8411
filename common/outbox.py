"""Publishing a task for a row that is already committed (an outbox row: a settlement, a
withdrawal, a webhook delivery), off the request's path.

The row in PostgreSQL is the promise; the broker message only makes it happen sooner, and a
sweeper re-queues whatever was never published. So a request must not wait on the broker: a
hanging Redis (connects succeed, replies never come) would otherwise hold every release for the
broker's timeouts. Each process hands its messages to one daemon thread through a bounded queue;
when the queue is full the message is dropped with a warning (the sweeper has it).

A task declared with `outbox_coalesce=True` (`@shared_task(..., outbox_coalesce=True)`) takes one
argument, a list of row ids: the thread merges the ids of every such call waiting in its queue
(and of those arriving within BATCH_LINGER of the first) into one message per BATCH_CAP ids, sent
with the context variables of the first call. Other tasks keep their order and one message each.
Under load one message then carries the rows of many requests of the process, and the worker runs
one task for them instead of one each.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import time
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
# Most ids in one coalesced message; more are split into several.
BATCH_CAP = 500
# How long the thread holds a coalesced message open for more ids before publishing it: a few
# hundredths of a second of latency, for fewer messages (and worker tasks) under load.
BATCH_LINGER = 0.05
# Most items the thread takes from its queue in one round.
DRAIN_MAX = 5_000


class _Item(NamedTuple):
    context: contextvars.Context
    task: Any
    args: tuple[Any, ...]


class _Batch(NamedTuple):
    context: contextvars.Context
    task: Any
    ids: dict[Any, None]  # an ordered set


_lock = threading.Lock()
_queue: queue.Queue[_Item] | None = None
_owner_pid: int | None = None


def coalesced(task: Any) -> bool:
    """Whether this task's messages are merged (`outbox_coalesce=True`, one list of ids)."""
    return getattr(task, "outbox_coalesce", False) is True


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


def _publisher() -> queue.Queue[_Item]:
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


def _drain(pending: queue.Queue[_Item]) -> None:
    while True:
        _drain_once(pending)


def _drain_once(pending: queue.Queue[_Item], *, linger: float | None = None) -> None:
    """One round: wait for an item, take whatever else is waiting; if a coalesced message is
    among them, keep taking what arrives for `linger` seconds (publishing the other tasks' as
    they come); then publish the merged messages."""
    linger = BATCH_LINGER if linger is None else linger
    taken = _take(pending, block=True)
    open_batches: dict[str, list[_Batch]] = {}
    _route(taken, open_batches)
    if open_batches and linger > 0:
        deadline = time.monotonic() + linger
        while (left := deadline - time.monotonic()) > 0:
            more = _take(pending, block=True, timeout=left)
            _route(more, open_batches)
            taken += more
    for batches in open_batches.values():
        for batch in batches:
            batch.context.run(_publish, batch.task, (list(batch.ids),))
    for _ in taken:
        pending.task_done()


def _take(pending: queue.Queue[_Item], *, block: bool, timeout: float | None = None) -> list[_Item]:
    """The next item (waiting up to `timeout`) and whatever else is already waiting."""
    try:
        items = [pending.get(block=block, timeout=timeout)]
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
        if not coalesced(item.task):
            item.context.run(_publish, item.task, item.args)
            continue
        batches = open_batches.setdefault(item.task.name, [])
        for id_ in item.args[0]:
            if not batches or len(batches[-1].ids) >= BATCH_CAP:
                # With the context of the call whose id comes first.
                batches.append(_Batch(item.context, item.task, {}))
            batches[-1].ids[id_] = None


def _publish(task: Any, args: tuple[Any, ...]) -> None:
    try:
        task.apply_async(args)
    except Exception:
        logger.warning("could not queue %s%r; its sweeper will", task.name, args, exc_info=True)
