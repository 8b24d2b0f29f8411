"""The take's two abuse counts in plain SQL (escrow.services.opening._abuse_counts, issue 17)
answer what the ORM's aggregate answers (_abuse_counts_orm), for every taker, maker, side and
window: funded trades as buyer (only when the taker buys), takes against one maker in a minute."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from escrow import services
from escrow.models import Trade
from escrow.services.opening import _abuse_counts, _abuse_counts_orm
from marketplace.tests.factories import make_trade

pytestmark = pytest.mark.django_db


def test_the_sql_counts_are_the_orms(alice, bob, carol):
    trades = [
        make_trade(alice, bob),  # bob buys from alice: funded
        make_trade(alice, bob),
        make_trade(carol, bob),
        make_trade(alice, carol),
        make_trade(bob, carol),
    ]
    services.trade_mark_paid(trade_id=trades[1].pk, actor=bob)  # no longer funded
    # One of bob's takes from alice happened long ago.
    Trade.objects.filter(pk=trades[0].pk).update(created_at=timezone.now() - timedelta(hours=2))
    people = [alice, bob, carol]
    now = timezone.now()
    answers = {}
    for taker in people:
        for maker in people:
            for buys in (True, False):
                for since in (now - timedelta(minutes=1), now - timedelta(days=1), now):
                    key = (taker.username, maker.username, buys, since)
                    args = {
                        "taker_id": taker.pk,
                        "maker_id": maker.pk,
                        "since": since,
                        "buys": buys,
                    }
                    answers[key] = _abuse_counts(**args)
                    assert answers[key] == _abuse_counts_orm(**args), key
    minute = now - timedelta(minutes=1)
    assert answers[("bob", "alice", True, minute)] == (2, 1)  # 2 funded as buyer, 1 recent take
    assert answers[("bob", "alice", False, minute)] == (0, 1)  # selling: unpaid is not counted
    assert answers[("bob", "alice", True, now - timedelta(days=1))] == (2, 2)
    assert answers[("carol", "bob", True, minute)] == (2, 1)  # buys from alice and from bob
