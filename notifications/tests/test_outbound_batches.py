"""Emails and Telegram messages in batches: one `send_outbound_many` task claims a batch of rows
with one lease, sends each once (a failing one is retried alone, after its own backoff), records
the outcomes in a constant number of statements; two workers racing one batch never send a row
twice; the sweeper re-queues overdue rows in batches. And common.outbox, the publisher, merges
the waiting ids of such a task into one broker message (real Redis) and leaves other tasks'
messages as they were."""

from __future__ import annotations

import contextvars
import os
import queue
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common import outbox
from conftest import broker_messages, require_postgres, wait_for
from notifications import outbound
from notifications.models import OutboundMessage
from notifications.tasks import send_outbound, send_outbound_many
from operations import context

Status = OutboundMessage.Status


def _rows(n: int, *, prefix: str = "user") -> list[OutboundMessage]:
    now = timezone.now()
    return OutboundMessage.objects.bulk_create(
        OutboundMessage(
            channel="email",
            category="trades",
            address=f"{prefix}{i}@example.test",
            subject=f"news {i}",
            body="hello",
            next_attempt_at=now,
        )
        for i in range(n)
    )


def _status(ids: list[int]) -> dict[str, int]:
    return dict(
        Counter(OutboundMessage.objects.filter(pk__in=ids).values_list("status", flat=True))
    )


# --- the worker's side ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_batch_is_sent_once_each_in_a_constant_number_of_statements(mailoutbox):
    require_postgres()
    small, large = _rows(2, prefix="s"), _rows(12, prefix="l")

    # when each batch is delivered
    with CaptureQueriesContext(connection) as few:
        sent_small = outbound.outbound_deliver_many(message_ids=[m.pk for m in small])
    with CaptureQueriesContext(connection) as many:
        sent_large = outbound.outbound_deliver_many(message_ids=[m.pk for m in large])

    # then every row went out once, and the batch of 12 took as many statements as the one of 2
    assert [m.status for m in sent_small + sent_large] == ["sent"] * 14
    assert sorted(m.to[0] for m in mailoutbox) == sorted(m.address for m in small + large)
    assert len(many) == len(few)
    assert _status([m.pk for m in small + large]) == {"sent": 14}
    assert set(
        OutboundMessage.objects.filter(pk__in=[m.pk for m in large]).values_list(
            "attempts", "last_error"
        )
    ) == {(1, "")}

    # and the same batch again (a redelivered message) sends nothing
    assert outbound.outbound_deliver_many(message_ids=[m.pk for m in small + large]) == []
    assert len(mailoutbox) == 14


@pytest.mark.django_db
def test_a_row_taken_over_meanwhile_keeps_what_its_new_owner_wrote(monkeypatch, mailoutbox):
    # given a batch whose second row the sweeper hands to another worker while this one sends
    # (its lease moved on): the outcomes are written compare-and-set on this worker's lease
    first, taken, third = _rows(3)
    real = outbound.SENDERS[OutboundMessage.Channel.EMAIL]
    other_lease = timezone.now() + timedelta(minutes=7)

    def send(message: OutboundMessage) -> None:
        if message.pk == taken.pk:
            OutboundMessage.objects.filter(pk=taken.pk).update(next_attempt_at=other_lease)
        real(message)

    monkeypatch.setitem(outbound.SENDERS, OutboundMessage.Channel.EMAIL, send)
    outbound.outbound_deliver_many(message_ids=[first.pk, taken.pk, third.pk])

    rows = {m.pk: m for m in OutboundMessage.objects.filter(pk__in=[first.pk, taken.pk, third.pk])}
    assert [(rows[m.pk].status, rows[m.pk].attempts) for m in (first, third)] == [("sent", 1)] * 2
    assert rows[first.pk].sent_at is not None
    assert rows[first.pk].next_attempt_at is None
    # the row taken over: as its new owner left it, for that worker to record
    assert (rows[taken.pk].status, rows[taken.pk].attempts) == ("pending", 0)
    assert rows[taken.pk].next_attempt_at == other_lease
    assert rows[taken.pk].sent_at is None


@pytest.mark.django_db
def test_rows_not_due_or_finished_are_skipped(mailoutbox):
    later, sent, due = _rows(3)
    OutboundMessage.objects.filter(pk=later.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=1)
    )
    OutboundMessage.objects.filter(pk=sent.pk).update(status=Status.SENT)

    delivered = outbound.outbound_deliver_many(message_ids=[later.pk, sent.pk, due.pk, 10**9])

    assert [m.pk for m in delivered] == [due.pk]
    assert [m.to for m in mailoutbox] == [[due.address]]


class Smtp:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that refuses the addresses in `refuse` for now
    (451) and keeps every message it accepts."""

    def __init__(self) -> None:
        self.refuse: set[str] = set()
        self.accepted: list[str] = []
        self.lock = threading.Lock()
        with socket.socket() as probe:  # a free port (aiosmtpd checks it by connecting)
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.accepted.extend(envelope.rcpt_tos)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp(settings: Any) -> Iterator[Smtp]:
    server = Smtp()
    server.controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_TIMEOUT = 5
    yield server
    server.controller.stop()


@pytest.mark.django_db
def test_a_failing_row_is_retried_alone_after_its_backoff(smtp, settings):
    settings.OUTBOUND_BACKOFF_BASE_SECONDS = 30
    rows = _rows(4)
    ids = [m.pk for m in rows]
    smtp.refuse = {rows[1].address}

    # when the batch is delivered while the server refuses one address for now
    delivered = outbound.outbound_deliver_many(message_ids=ids)

    # then the other three are sent, and the refused one waits for its own retry
    assert sorted(smtp.accepted) == sorted(m.address for i, m in enumerate(rows) if i != 1)
    assert {m.pk: m.status for m in delivered} == {
        m.pk: "pending" if i == 1 else "sent" for i, m in enumerate(rows)
    }
    failed = OutboundMessage.objects.get(pk=rows[1].pk)
    assert (failed.status, failed.attempts, failed.last_error) == (
        "pending",
        1,
        "refused",
    )  # 4xx: for now
    assert failed.next_attempt_at > timezone.now() + timedelta(seconds=50)  # 30 s * 2^1
    # and the task re-queues that one row only, when it is due
    [(countdown, retried)] = outbound.outbound_retries(delivered)
    assert retried == [rows[1].pk]
    assert 50 < countdown <= 60

    # when the retry comes (here: its time has come) and the server takes it
    smtp.refuse = set()
    OutboundMessage.objects.filter(pk=rows[1].pk).update(next_attempt_at=timezone.now())
    again = outbound.outbound_deliver_many(message_ids=retried)

    # then it alone is sent; nobody got a mail twice
    assert [(m.pk, m.status, m.attempts) for m in again] == [(rows[1].pk, "sent", 2)]
    assert sorted(smtp.accepted) == sorted(m.address for m in rows)
    assert _status(ids) == {"sent": 4}


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_one_batch_never_send_a_row_twice(mailoutbox):
    require_postgres()
    rows = _rows(40)
    ids = [m.pk for m in rows]
    barrier = threading.Barrier(4)
    results: list[Any] = [None] * 4

    def worker(i: int) -> None:
        try:
            barrier.wait()
            # each worker gets the batch in its own order: their claims interleave
            mine = ids if i % 2 else list(reversed(ids))
            results[i] = [m.pk for m in outbound.outbound_deliver_many(message_ids=mine)]
        except Exception as exc:
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert not [r for r in results if isinstance(r, Exception)], results
    # every row was claimed by exactly one worker, and mailed exactly once
    claimed = [pk for r in results for pk in r]
    assert sorted(claimed) == sorted(ids)
    assert Counter(m.to[0] for m in mailoutbox) == Counter(m.address for m in rows)
    assert _status(ids) == {"sent": 40}


@pytest.mark.django_db
def test_the_sweeper_requeues_overdue_rows_in_batches(monkeypatch):
    published: list[list[int]] = []
    monkeypatch.setattr(outbound, "_enqueue_many", lambda ids: published.append(list(ids)))
    rows = _rows(1203)
    overdue = timezone.now() - timedelta(minutes=10)
    OutboundMessage.objects.filter(pk__in=[m.pk for m in rows]).update(next_attempt_at=overdue)
    recent = _rows(1)  # due now, not overdue: its own message is on its way

    # a thousand at a time, in messages of 500 ids
    assert outbound.outbound_requeue_due() == 1000
    assert [len(ids) for ids in published] == [500, 500]
    assert outbound.outbound_requeue_due() == 203
    assert sorted(pk for ids in published for pk in ids) == sorted(m.pk for m in rows)
    # and once re-queued, a row is not overdue again until its grace has passed
    assert outbound.outbound_requeue_due() == 0
    assert recent[0].pk not in {pk for ids in published for pk in ids}


@pytest.mark.django_db(transaction=True)
@pytest.mark.celery_worker
def test_the_worker_sends_a_committed_batch_once(celery_worker_process):
    # the rows of one commit go out as one send_outbound_many message, through the publisher
    rows = _rows(5)
    outbound._enqueue_many([m.pk for m in rows])
    wait_for(lambda: _status([m.pk for m in rows]) == {"sent": 5})
    # and a send_outbound message from before the batches (in a broker during a deploy) works
    [old] = _rows(1, prefix="old")
    send_outbound.delay(old.pk)
    wait_for(lambda: _status([old.pk]) == {"sent": 1})
    assert set(
        OutboundMessage.objects.filter(pk__in=[m.pk for m in [*rows, old]]).values_list(
            "attempts", flat=True
        )
    ) == {1}


# --- the publisher (common.outbox) ------------------------------------------------------------


@pytest.fixture
def broker_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A queue of the test Redis that no worker reads: both outbound tasks are routed to it.
    Yields a function returning the messages published there so far, as (task, args, context)."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs Redis: run through `make test` (it starts one)")
    # What this process's publisher still holds from earlier tests goes out first, to its own
    # queue: held open for its linger, it landed in this test's queue once (a flaky failure).
    assert outbox.publish_pending()
    name = f"outbox-test-{os.getpid()}"
    for task in (send_outbound, send_outbound_many):
        monkeypatch.setattr(task, "queue", name, raising=False)
        monkeypatch.setattr(task, "_exec_options", None)  # Celery caches the options

    def published() -> list[tuple[str, Any, Any]]:
        return broker_messages(name)

    published()  # nothing left over
    yield published
    published()


def _call(request_id: str, task: Any, *args: Any) -> outbox._Item:
    """An item as publish_after_commit queues it, from a request with this id."""
    tokens = context.bind(request_id=request_id)
    try:
        item = outbox._Item(contextvars.copy_context(), task, args)
    finally:
        context.unbind(tokens)
    return item


def _drain_all(pending: queue.Queue[outbox._Item]) -> None:
    """The publisher's rounds until nothing is waiting and no message is held open."""
    open_batches: dict[str, list[outbox._Batch]] = {}
    outbox._drain_round(pending, open_batches)
    while open_batches or not pending.empty():
        outbox._drain_round(pending, open_batches)


def test_the_publisher_merges_waiting_ids_into_one_message(broker_queue, monkeypatch):
    monkeypatch.setattr(outbox, "BATCH_CAP", 4)
    monkeypatch.setattr(send_outbound_many, "outbox_coalesce", True)  # BATCH_LINGER
    monkeypatch.setattr(outbox, "BATCH_LINGER", 0)
    pending: queue.Queue[outbox._Item] = queue.Queue()
    # what five requests of one process queued while the publisher was busy
    for item in [
        _call("request-0001", send_outbound, 1),
        _call("request-0002", send_outbound_many, [10, 11]),
        _call("request-0003", send_outbound, 2),
        _call("request-0004", send_outbound_many, [12, 11]),
        _call("request-0005", send_outbound_many, [13, 14]),
    ]:
        pending.put(item)

    # when the publisher takes what waits (holding nothing open: BATCH_LINGER 0)
    _drain_all(pending)

    # then the ids went out in messages of at most 4 (a repeated id once), with the context of
    # the first call of each; the other task's messages, one each, in their order
    assert pending.unfinished_tasks == 0
    assert broker_queue() == [
        ("notifications.tasks.send_outbound", [1], {"request_id": "request-0001"}),
        ("notifications.tasks.send_outbound", [2], {"request_id": "request-0003"}),
        ("notifications.tasks.send_outbound_many", [[10, 11, 12, 13]], {"request_id": "request-0002"}),
        ("notifications.tasks.send_outbound_many", [[14]], {"request_id": "request-0005"}),
    ]  # fmt: skip


def test_the_publisher_holds_a_message_open_for_more_ids(broker_queue, monkeypatch):
    monkeypatch.setattr(send_outbound_many, "outbox_coalesce", 3.0)
    pending: queue.Queue[outbox._Item] = queue.Queue()
    pending.put(_call("request-0001", send_outbound_many, [1]))
    published: list[Any] = []

    def later() -> None:
        # while the message is held open: another commit's ids, and a plain task's message,
        # which goes out at once
        pending.put(_call("request-0002", send_outbound_many, [2, 3]))
        pending.put(_call("request-0003", send_outbound, 4))
        wait_for(lambda: published.extend(broker_queue()) or published)

    timer = threading.Timer(0.01, later)
    timer.start()
    _drain_all(pending)
    timer.join()

    assert published == [("notifications.tasks.send_outbound", [4], {"request_id": "request-0003"})]
    assert broker_queue() == [
        ("notifications.tasks.send_outbound_many", [[1, 2, 3]], {"request_id": "request-0001"}),
    ]


def test_publish_after_commit_never_raises(monkeypatch, caplog):
    # a full queue: the ids are left to the sweeper, with a warning
    full: queue.Queue[outbox._Item] = queue.Queue(maxsize=1)
    full.put(_call("request-0001", send_outbound, 1))
    monkeypatch.setattr(outbox, "_publisher", lambda: full)
    outbox.publish_after_commit(send_outbound_many, [1, 2])
    assert "publish queue full" in caplog.text
    # not a list of ids for a coalesced task: a warning, nothing queued
    outbox.publish_after_commit(send_outbound_many, 7)
    assert "could not queue" in caplog.text
    # an empty list: nothing to publish
    outbox.publish_after_commit(send_outbound_many, [])
    assert full.qsize() == 1


def test_a_real_publisher_thread_delivers_merged_ids(broker_queue):
    # the process's own publisher: two calls in a row (within its linger) go out as one message
    outbox.publish_after_commit(send_outbound_many, [21])
    outbox.publish_after_commit(send_outbound_many, [22])
    got: list[Any] = []

    def both() -> bool:
        got.extend(args[0] for _, args, _ in broker_queue())
        return sorted(pk for ids in got for pk in ids) == [21, 22]

    wait_for(both)
    # one message, unless the thread was held up for longer than its linger between the two
    assert got == [[21, 22]] or got == [[21], [22]]


def test_publish_pending_sends_a_held_message_at_once(broker_queue, monkeypatch):
    # given the process's own publisher holds a merged message open for a minute
    monkeypatch.setattr(send_outbound_many, "outbox_coalesce", 60.0)
    outbox.publish_after_commit(send_outbound_many, [31])
    outbox.publish_after_commit(send_outbound_many, [32])
    # when a test's teardown asks for whatever is pending
    assert outbox.publish_pending(timeout=10)
    # then it is on the broker already, in one message, well before its linger
    assert broker_queue() == [("notifications.tasks.send_outbound_many", [[31, 32]], None)]
    # and with nothing held, it answers at once
    assert outbox.publish_pending(timeout=10)
    assert broker_queue() == []


def _process_holding_a_message(ids: list[int], *, then: str) -> None:
    """Run a process whose publisher holds a merged message of `ids` open for a minute, and
    then exits by `then`'s lines; it must end well."""
    calls = "\n".join(f"outbox.publish_after_commit(send_outbound_many, [{i}])" for i in ids)
    script = f"""
import os
import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
django.setup()
from celery import signals

import config.celery  # noqa: F401 - the worker's app and its signal handlers
from common import outbox
from notifications.tasks import send_outbound_many

send_outbound_many.queue = {f"outbox-test-{os.getpid()}"!r}
send_outbound_many.outbox_coalesce = 60.0
{calls}
{then}
"""
    done = subprocess.run(
        [sys.executable, "-c", script], timeout=60, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_a_process_that_exits_sends_the_messages_it_held(broker_queue):
    # given a process (a gunicorn worker being recycled) whose publisher holds a merged message
    # open for a minute, when it exits cleanly at once
    _process_holding_a_message([51, 52], then="")
    # then the message went out before the process ended, not a minute later
    assert broker_queue() == [("notifications.tasks.send_outbound_many", [[51, 52]], None)]


def test_a_celery_pool_child_that_exits_sends_the_messages_it_held(broker_queue):
    # given a Celery prefork child whose publisher holds a merged message open for a minute
    # (a task of it queued emails), when it exits as billiard's pool child does: the
    # worker_process_shutdown signal, then os._exit (no atexit hook runs)
    _process_holding_a_message(
        [61, 62],
        then="signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)\n"
        "os._exit(0)",
    )
    # then the message went out before the child ended, not to the sweeper
    assert broker_queue() == [("notifications.tasks.send_outbound_many", [[61, 62]], None)]
