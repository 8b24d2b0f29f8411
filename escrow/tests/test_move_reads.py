"""A move made from a request reads its trade once (issue 17): the row it locks comes with what
its listeners and its API answer show (escrow.services.SHOWN_RELATED), so the listeners read no
trade and the answer reads only the events; what they show is the trade as committed."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escrow import services
from escrow.models import EscrowEvent, Trade
from marketplace.tests.factories import fund, make_offer, make_trade
from tests.test_api import client_for

pytestmark = pytest.mark.django_db

PASSWORD = {"password": "demo-pass-123"}  # the factories' account password (no 2FA)


def _trade_reads(queries: CaptureQueriesContext) -> list[str]:
    """The statements that read trade rows (the columns of a whole trade: not a count)."""
    row = r'SELECT "escrow_trade"\."id", "escrow_trade"\."offer_id", '
    return [q["sql"] for q in queries if re.match(row, q["sql"])]


def test_the_listeners_of_a_move_read_no_trade(alice, bob, django_capture_on_commit_callbacks):
    trade = make_trade(alice, bob)
    seen: dict[str, object] = {}

    def listener(events):
        with CaptureQueriesContext(connection) as queries:
            trades = services.announced_trades(events)
        seen["queries"], seen["trade"] = len(queries), trades[trade.pk]

    services.transition_listeners.append(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.trade_mark_paid(trade_id=trade.pk, actor=bob)
    finally:
        services.transition_listeners.remove(listener)
    shown = seen["trade"]
    assert seen["queries"] == 0
    assert isinstance(shown, Trade)
    assert shown.state == Trade.State.PAID
    assert shown.paid_at is not None
    assert (shown.buyer.username, shown.seller.username) == (bob.username, alice.username)
    assert (shown.asset.code, shown.fiat.code) == ("BTC", "EUR")


def test_a_batch_of_events_loaded_by_a_task_reads_its_trades_in_one_query(alice, bob):
    first, second = make_trade(alice, bob), make_trade(alice, bob)
    events = list(EscrowEvent.objects.filter(trade__in=[first, second]).order_by("pk"))
    with CaptureQueriesContext(connection) as queries:
        trades = services.announced_trades(events)
    assert len(queries) == 1
    assert set(trades) == {first.pk, second.pk}
    assert trades[first.pk].buyer.username == bob.username


def test_each_answer_is_the_trade_as_committed_and_reads_it_once(alice, bob):
    fund(alice, "BTC", "1")
    offer = make_offer(alice, price="80000", amount="0.5")
    seller, buyer = client_for(alice), client_for(bob)
    with CaptureQueriesContext(connection) as queries:
        taken = buyer.post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, format="json")
    assert taken.status_code == 201, taken.json()
    assert _trade_reads(queries) == []  # the take inserted it: nothing to read back
    trade_id = taken.json()["id"]
    assert taken.json() == buyer.get(f"/api/v1/trades/{trade_id}/").json()
    moves = [
        (buyer, "mark-paid", {}, "paid"),
        (seller, "release", PASSWORD, "releasing"),
    ]
    for client, action, body, state in moves:
        with CaptureQueriesContext(connection) as queries:
            answer = client.post(f"/api/v1/trades/{trade_id}/{action}/", body, format="json")
        assert answer.status_code == 200, (action, answer.json())
        reads = _trade_reads(queries)
        assert len(reads) == 1, reads  # the row the move locked, with what the answer shows
        assert "FOR NO KEY UPDATE" in reads[0]
        assert answer.json()["state"] == state
        fresh = Trade.objects.get(pk=trade_id)
        if fresh.state == state:  # not settled yet in between
            assert answer.json() == client.get(f"/api/v1/trades/{trade_id}/").json()


def test_a_cancel_answers_with_the_trade_as_committed(alice, bob):
    trade = make_trade(alice, bob)
    answer = client_for(bob).post(
        f"/api/v1/trades/{trade.pk}/cancel/", {"cancel_reason": "other"}, format="json"
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json() == client_for(bob).get(f"/api/v1/trades/{trade.pk}/").json()
    assert answer.json()["state"] == "cancelled"


@pytest.mark.parametrize("action", ["mark-paid", "cancel"])
def test_strangers_get_404_even_for_a_bad_body(alice, bob, carol, action):
    trade = make_trade(alice, bob)
    bad = {"reason": "x" * 500, "cancel_reason": "no-such-reason"}
    answer = client_for(carol).post(f"/api/v1/trades/{trade.pk}/{action}/", bad, format="json")
    assert answer.status_code == 404, answer.json()
    assert answer.json()["error"]["code"] == "not_found"
    own = client_for(bob).post(f"/api/v1/trades/{trade.pk}/{action}/", bad, format="json")
    assert own.status_code == 400, own.json()  # the party is told what is wrong with it
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.FUNDED
