"""Timers across outages: a payment window that ends while beat is down is applied when beat
returns; a trade paid before its window ended is never expired, however late expiry runs and
however close to the deadline the payment came."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from common.errors import InvalidTransition
from conftest import wait_for
from escrow import services
from escrow import services as escrow_services
from escrow.models import EscrowEvent, Trade
from escrow.tasks import expire_overdue_trades
from ledger.models import LedgerAccount, Transfer
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer

from .conftest import ApiClient, assert_ledger_verifies, make_traders, run_together

pytestmark = pytest.mark.django_db(transaction=True)


def _deadline(trade: Trade, seconds: float) -> Trade:
    """Give the trade a payment window ending `seconds` from now (a 5-minute window taken
    4:59 ago, without waiting for it)."""
    Trade.objects.filter(pk=trade.pk).update(
        payment_deadline=timezone.now() + timedelta(seconds=seconds)
    )
    trade.refresh_from_db()
    return trade


def _state(trade: Trade) -> str:
    return Trade.objects.values_list("state", flat=True).get(pk=trade.pk)


@pytest.mark.celery_worker
def test_windows_that_end_while_beat_is_down_apply_when_it_returns(
    refdata, live_server, fault_worker
):
    (seller, _), *buyers = make_traders("timer", 4)
    fund(seller, "BTC", "1")
    offer = make_offer(seller, amount="0.5", min_fiat="10", payment_window_minutes=5)
    api = {user.pk: ApiClient(live_server.url, token) for user, token in buyers}
    lapsed, paid_late, still_open = (
        escrow_services.trade_open(offer_id=offer.pk, taker=user, amount="0.01")
        for user, _ in buyers
    )
    worker = fault_worker(concurrency=2)
    worker.start()
    # given beat is down (nothing sends the periodic tasks) while two windows end: one unpaid,
    # one paid in its last seconds
    lapsed = _deadline(lapsed, 2.0)
    paid_late = _deadline(paid_late, 2.0)
    paid = api[paid_late.buyer_id].post(f"/trades/{paid_late.pk}/mark-paid/")
    assert paid.status == 200, paid
    paid_late.refresh_from_db()
    assert paid_late.paid_at < paid_late.payment_deadline
    assert paid_late.payment_deadline - paid_late.paid_at < timedelta(seconds=2)
    still_open = _deadline(still_open, 600)
    end = max(lapsed.payment_deadline, paid_late.payment_deadline)
    wait_for(lambda: timezone.now() > end, timeout=10, interval=0.02)
    # the window is over even though no one applied it yet: the buyer can no longer pay
    assert _state(lapsed) == Trade.State.FUNDED
    late = api[lapsed.buyer_id].post(f"/trades/{lapsed.pk}/mark-paid/")
    assert late.status == 409, late
    assert "payment window has ended" in late.message

    # when beat returns and sends its periodic expiry
    expire_overdue_trades.delay()
    # then the lapsed window is applied: expired, the hold back with the seller, the amount
    # back on the offer
    wait_for(lambda: _state(lapsed) == Trade.State.EXPIRED, timeout=30)
    assert Transfer.objects.filter(idempotency_key=f"trade:{lapsed.pk}:void").count() == 1
    # and the trade paid before its deadline is never expired, nor the one still open
    with pytest.raises(InvalidTransition):
        services.escrow_expire(trade_id=paid_late.pk)
    with pytest.raises(InvalidTransition):
        services.escrow_expire(trade_id=still_open.pk)
    assert services.trades_expire_overdue() == 0
    assert _state(paid_late) == Trade.State.PAID
    assert _state(still_open) == Trade.State.FUNDED
    assert not EscrowEvent.objects.filter(
        trade_id__in=[paid_late.pk, still_open.pk], new_state=Trade.State.EXPIRED
    ).exists()
    seller_account = LedgerAccount.objects.get(code=f"user:{seller.pk}:BTC")
    assert seller_account.available == Decimal(1) - paid_late.hold_amount - still_open.hold_amount
    assert Offer.objects.get(pk=offer.pk).available == Decimal("0.48")
    assert_ledger_verifies()


def test_payment_racing_the_deadline_and_the_expiry_sweep(refdata):
    """Buyers mark paid around their deadline (from 0.6 s before to 0.2 s after) while the
    expiry sweep runs in a loop: each trade ends paid (paid before its deadline) or expired
    (not paid before it), never both, never paid late."""
    count = 24
    (seller, _), *buyers = make_traders("edge", count + 1)
    fund(seller, "BTC", "1")
    offer = make_offer(seller, amount="0.5", min_fiat="10")
    trades = [
        escrow_services.trade_open(offer_id=offer.pk, taker=user, amount="0.01")
        for user, _ in buyers
    ]
    deadline = timezone.now() + timedelta(seconds=1.5)
    Trade.objects.filter(pk__in=[t.pk for t in trades]).update(payment_deadline=deadline)
    # each buyer acts at its own offset from the deadline, spread over [-0.6 s, +0.2 s]
    offsets = [-0.6 + 0.8 * i / (count - 1) for i in range(count)]
    wall_deadline = time.time() + (deadline - timezone.now()).total_seconds()

    def pay(trade: Trade, offset: float):
        def call():
            time.sleep(max(0.0, wall_deadline + offset - time.time()))
            return services.trade_mark_paid(trade_id=trade.pk, actor=trade.buyer)

        return call

    def sweep():
        expired = 0
        while time.time() < wall_deadline + 0.6:
            expired += services.trades_expire_overdue()
        return expired + services.trades_expire_overdue()

    results = run_together(
        [pay(t, o) for t, o in zip(trades, offsets, strict=True)] + [sweep, sweep], timeout=60
    )
    outcomes = Counter()
    for trade, result in zip(trades, results[:count], strict=True):
        trade.refresh_from_db()
        events = list(trade.events.values_list("new_state", flat=True))
        if isinstance(result, Trade):
            outcomes["paid"] += 1
            assert trade.state == Trade.State.PAID
            assert trade.paid_at < trade.payment_deadline
            assert Trade.State.EXPIRED not in events
        else:
            outcomes["expired"] += 1
            assert isinstance(result, InvalidTransition), result
            assert trade.state == Trade.State.EXPIRED
            assert Trade.State.PAID not in events
    assert sum(r for r in results[count:]) == outcomes["expired"]
    # the race was real: some paid in time, some too late
    assert outcomes["paid"], outcomes
    assert outcomes["expired"], outcomes
    assert_ledger_verifies()
    print(f"\n[deadline-race] {dict(outcomes)} of {count} around one deadline")
