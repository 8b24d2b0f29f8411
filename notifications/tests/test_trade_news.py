"""A request's move leaves its news to the worker (issue 17): its live event goes out as it
commits, its notifications, email and webhook rows are written by one task for the moves of many
requests, once each, and the event row is the promise: a sweeper writes the news of a move whose
message was lost. Real PostgreSQL, Redis and (where marked) a Celery worker process."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from conftest import wait_for
from escrow import services as escrow
from escrow.models import EscrowEvent
from marketplace.tests.factories import make_trade
from notifications import listeners, services, tasks
from notifications.models import Notification, OutboundMessage


@pytest.fixture
def news_lost(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A request's move whose news message never reaches the broker; returns the event ids."""
    dropped: list[int] = []
    monkeypatch.setattr(listeners, "_announce_later", dropped.extend)
    return dropped


@pytest.fixture
def moves_queue(task_queue: Any) -> Any:
    """The messages of announce_trade_moves (none reaches a worker)."""
    return task_queue(tasks.announce_trade_moves)


@pytest.mark.django_db
def test_the_moves_of_many_requests_go_out_as_one_message_and_their_news_is_written_once(
    alice, bob, django_capture_on_commit_callbacks, moves_queue
):
    # given three moves, each committed by a request of this process
    with django_capture_on_commit_callbacks(execute=True):
        first = make_trade(alice, bob)
    with django_capture_on_commit_callbacks(execute=True):
        second = make_trade(alice, bob)
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_mark_paid(trade_id=first.pk, actor=bob)
    # then none wrote its news itself: one message carries the three moves to the worker
    assert not Notification.objects.exists()
    assert EscrowEvent.objects.filter(announced=False).count() == 3
    (ids,) = moves_queue()
    assert sorted(ids) == sorted(
        EscrowEvent.objects.filter(trade__in=[first, second]).values_list("pk", flat=True)
    )
    # when the worker runs that task (its body, here): the news of all three, once
    assert tasks.announce_trade_moves(ids) == 3
    assert sorted(Notification.objects.values_list("kind", "trade_id")) == sorted(
        [("created", first.pk), ("created", second.pk), ("paid", first.pk)]
    )
    assert OutboundMessage.objects.count() == 3  # the maker's two "created", the seller's "paid"
    assert not EscrowEvent.objects.filter(announced=False).exists()
    # and a message delivered twice (a worker lost after the commit) writes nothing again
    assert tasks.announce_trade_moves(ids) == 0
    assert Notification.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_two_workers_given_the_same_moves_write_their_news_once(alice, bob, news_lost):
    # given twelve moves whose news is waiting (the same ids in two workers' messages)
    trades = [make_trade(alice, bob) for _ in range(6)]
    for trade in trades:
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    assert len(news_lost) == 12
    start = threading.Barrier(2)
    written: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait(timeout=10)
            written.append(len(services.trade_news_write(event_ids=news_lost)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    # when both write them at the same time, on two connections
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    # then each move's news is written by one of them: one notification each, none twice
    assert sum(written) == 12
    assert Notification.objects.filter(user=alice, kind="created").count() == 6
    assert Notification.objects.filter(user=alice, kind="paid").count() == 6
    assert not EscrowEvent.objects.filter(announced=False).exists()


@pytest.mark.django_db
def test_the_sweeper_writes_the_news_whose_message_was_lost_once_it_is_overdue(
    alice, bob, django_capture_on_commit_callbacks, news_lost
):
    # given a move whose news message was lost
    with django_capture_on_commit_callbacks(execute=True):
        trade = make_trade(alice, bob)
    assert news_lost
    assert not Notification.objects.exists()
    # when the sweeper runs before it is overdue: it leaves it to its message
    assert tasks.sweep_trade_news() == 0
    # when it is overdue
    EscrowEvent.objects.filter(pk__in=news_lost).update(
        created_at=timezone.now() - timedelta(seconds=services.TRADE_NEWS_OVERDUE_SECONDS + 1)
    )
    # then the sweeper writes it, once
    assert tasks.sweep_trade_news() == 1
    assert list(Notification.objects.values_list("user__username", "kind", "trade_id")) == [
        ("alice", "created", trade.pk)
    ]
    assert tasks.sweep_trade_news() == 0
    # and beat runs it
    schedule = settings.CELERY_BEAT_SCHEDULE["notifications-sweep-trade-news"]
    assert schedule["task"] == tasks.sweep_trade_news.name


@pytest.mark.django_db
def test_the_sweeper_finds_the_waiting_moves_through_its_partial_index(alice, bob, news_lost):
    make_trade(alice, bob)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM escrow_escrowevent WHERE NOT announced"
            " AND created_at < now() ORDER BY created_at LIMIT 500"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "escrow_event_unannounced" in plan


@pytest.mark.django_db(transaction=True)
@pytest.mark.celery_worker
def test_a_request_s_move_has_its_news_written_by_the_worker(celery_worker_process, alice, bob):
    # when bob opens a trade on alice's offer and marks it paid (each move commits)
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    # then the worker writes alice's news of both, once each, and marks the moves announced
    wait_for(lambda: not EscrowEvent.objects.filter(announced=False).exists())
    assert sorted(Notification.objects.values_list("user__username", "kind")) == [
        ("alice", "created"),
        ("alice", "paid"),
    ]
