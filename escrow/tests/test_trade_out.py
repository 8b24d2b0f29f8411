"""TradeOut's unrolled to_representation (every trading request's answer) against DRF's own walk
over the declared fields: for a trade in each state, with and without a copied payment account,
seen by its buyer, its seller, a stranger and the moderator assigned to its dispute."""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from accounts.tests.factories import complete
from disputes import services as disputes
from disputes.tests.test_services import moderator
from escrow import services as escrow
from escrow.api.serializers import EventOut, TradeOut
from escrow.models import Trade
from escrow.selectors.trades import trade_for_answer
from escrow.tests.test_payment_details import api
from marketplace.tests.factories import make_trade

pytestmark = pytest.mark.django_db


def _assert_same(trade_id: int, viewers) -> int:
    """The fast and the generic answer agree (values, key order, JSON) for each viewer; returns
    how many answers carried a payment account."""
    trade = trade_for_answer(trade_id=trade_id)
    shown = 0
    for viewer in viewers:
        out = TradeOut(context={"request": SimpleNamespace(user=viewer)})
        fast, generic = out.to_representation(trade), out.generic_representation(trade)
        assert fast == generic
        assert list(fast) == list(generic)  # the same key order: the same JSON
        assert JSONRenderer().render(fast) == JSONRenderer().render(generic)
        shown += fast["payment_account"] is not None
        for event in trade.events.all():
            one = EventOut()
            assert one.to_representation(event) == one.generic_representation(event)
    return shown


def test_every_state_and_viewer_matches_drfs_generic_walk(trade, alice, bob, carol):
    stranger = carol
    with_account = trade  # paid by Revolut into alice's copied account
    # funded and paid with the copied account: the buyer and the seller see it, a stranger not
    assert _assert_same(with_account.pk, [bob, alice, stranger, None]) == 2
    escrow.trade_mark_paid(trade_id=with_account.pk, actor=bob)
    assert _assert_same(with_account.pk, [bob, alice, stranger]) == 2
    # disputed: the assigned moderator sees the account too
    Trade.objects.filter(pk=with_account.pk).update(paid_at=timezone.now() - timedelta(minutes=11))
    dispute = disputes.dispute_open(
        trade_id=with_account.pk, actor=bob, category="paid_not_released", text="Paid, no release."
    )
    assigned = moderator("mod1")
    disputes.dispute_assign(dispute_id=dispute.pk, actor=assigned)
    assert _assert_same(with_account.pk, [bob, alice, assigned]) == 3

    # no payment method account, then each way a trade ends
    plain = make_trade(alice, bob, amount="0.0123")
    assert _assert_same(plain.pk, [bob, alice, stranger]) == 0
    complete(plain)
    _assert_same(plain.pk, [bob, alice, stranger])
    cancelled = make_trade(alice, bob, amount="0.02")
    escrow.trade_cancel(trade_id=cancelled.pk, actor=bob, cancel_reason="changed_mind")
    _assert_same(cancelled.pk, [bob, alice])
    releasing = make_trade(alice, bob, amount="0.03", terms="<b>SEPA</b> only & fast.")
    escrow.trade_mark_paid(trade_id=releasing.pk, actor=bob)
    escrow.escrow_release(trade_id=releasing.pk, actor=alice)
    _assert_same(releasing.pk, [bob, alice])
    states = set(Trade.objects.values_list("state", flat=True))
    assert states == {"disputed", "completed", "cancelled", "releasing"}


def test_the_api_answers_with_the_fast_path(trade, bob):
    """The answer over HTTP is what the generic walk gives for the caller."""
    got = api(bob).get(f"/api/v1/trades/{trade.pk}/").json()
    out = TradeOut(context={"request": SimpleNamespace(user=bob)})
    expected = JSONRenderer().render(
        out.generic_representation(trade_for_answer(trade_id=trade.pk))
    )
    assert got == json.loads(expected)
    assert got["payment_account"]["details"][1]["value"] == "@alicem"
    assert got["actions"] == ["mark-paid", "cancel", "dispute"]
