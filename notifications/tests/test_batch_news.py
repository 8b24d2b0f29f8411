"""A settlement batch's news (issue 17): its in-app notifications and its live events both come
from the one task the batch's commit queues, the live events after the notifications they
announce, from one read of the trades; the settling worker publishes nothing itself."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escrow import services as escrow
from marketplace.tests.factories import make_trade
from notifications import tasks
from notifications.live import events
from notifications.models import Notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def news_queue(task_queue: Any) -> Any:
    """The messages of notify_trade_events (none reaches a worker)."""
    return task_queue(tasks.notify_trade_events)


def _stream(user_id: int) -> list[dict[str, Any]]:
    return [
        json.loads(fields["e"])
        for _, fields in events._redis().xrange(events.stream_key(user_id), "-", "+")
    ]


def _trade_reads(queries: CaptureQueriesContext) -> int:
    row = r'SELECT "escrow_trade"\."id", "escrow_trade"\."offer_id", '
    return sum(1 for q in queries if re.match(row, q["sql"]))


def test_a_batch_s_news_and_live_events_come_from_its_one_task(
    alice, bob, django_capture_on_commit_callbacks, news_queue
):
    # given two released trades waiting for the settlement worker
    trades = [make_trade(alice, bob) for _ in range(2)]
    for trade in trades:
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        escrow.escrow_release(trade_id=trade.pk, actor=alice)
    events._redis().delete(events.stream_key(alice.pk), events.stream_key(bob.pk))

    # when a worker settles them in one batch
    with django_capture_on_commit_callbacks(execute=True):
        assert escrow.settlements_execute_pending(batch_size=10) == 2

    # then the settling published no live event and wrote no notification: it queued one task
    assert _stream(alice.pk) == _stream(bob.pk) == []
    assert not Notification.objects.filter(kind="completed").exists()
    (event_ids,) = news_queue()
    assert len(event_ids) == 2

    # and that task (its body, run here) writes the news, then publishes the live events, from
    # one read of the trades
    with CaptureQueriesContext(connection) as queries:
        assert tasks.notify_trade_events(event_ids) == 2
    assert _trade_reads(queries) == 1
    assert Notification.objects.filter(kind="completed").count() == 4  # both parties, twice
    for user in (alice, bob):
        completed = [e for e in _stream(user.pk) if e["event"] == "trade.completed"]
        assert sorted(e["trade"] for e in completed) == sorted(t.pk for t in trades)
        assert all(e["body"]["trade"]["state"] == "completed" for e in completed)


@pytest.mark.django_db(transaction=True)
def test_a_move_wakes_its_watchers_at_once_and_its_news_wakes_them_again(
    alice, bob, monkeypatch, trade_news_inline
):
    # the move's live event goes to both parties' streams and wakes both sockets with one
    # channel-layer send, as it commits; the news (written by the worker's task: run here as it
    # commits) then wakes the other party once for the badge (real commits, as in a request)
    trade = make_trade(alice, bob)
    sent: list[tuple[list[str], str]] = []
    real = events._group_send

    def recorded(groups, message, **kwargs):
        sent.append((list(groups), message["type"]))
        return real(groups, message, **kwargs)

    monkeypatch.setattr(events, "_group_send", recorded)
    events._redis().delete(events.stream_key(alice.pk), events.stream_key(bob.pk))
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    wakes = [groups for groups, kind in sent if kind == "live.wake"]
    assert wakes == [
        sorted([events.user_group(alice.pk), events.user_group(bob.pk)]),
        [events.user_group(alice.pk)],
    ]
    # alice's stream: the move's, then her badge's; bob, who moved, gets no news
    assert [e["event"] for e in _stream(alice.pk)] == ["trade.paid", "notification"]
    assert [e["event"] for e in _stream(bob.pk)] == ["trade.paid"]
    assert trade_news_inline[-1] == trade.events.get(new_state="paid").pk
