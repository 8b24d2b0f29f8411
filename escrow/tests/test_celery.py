"""The whole trade end to end, settled by a real Celery worker process over a real Redis."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from conftest import wait_for
from escrow import services
from escrow.models import Settlement, Trade
from escrow.services import transitions
from ledger.models import Transfer
from ledger.selectors import balance_available
from ledger.tasks import seal_pending
from marketplace.tests.factories import make_trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def _state(trade_id: int) -> str:
    return Trade.objects.values_list("state", flat=True).get(pk=trade_id)


def test_trade_settles_through_the_worker(celery_worker_process, alice, bob):
    # given a trade taken, paid and released through the services
    trade = make_trade(alice, bob, amount="0.02")
    services.trade_mark_paid(trade_id=trade.pk, actor=bob)
    services.escrow_release(trade_id=trade.pk, actor=alice)
    # then the worker (a separate process) settles it: completed, bob paid once
    wait_for(lambda: _state(trade.pk) == Trade.State.COMPLETED)
    assert balance_available(user=bob, asset_code="BTC") == Decimal("0.02") - trade.buyer_fee
    assert Transfer.objects.filter(reference=trade.pk, kind="trade_payout").count() == 1
    # and the worker seals the chain; verify_ledger passes
    seal_pending.delay()
    wait_for(lambda: not Transfer.objects.filter(seq__isnull=True).exists())
    call_command("verify_ledger", "--no-progress")


def test_sweeper_requeues_a_lost_settlement(celery_worker_process, alice, bob, monkeypatch):
    # given a release whose broker message was lost
    trade = make_trade(alice, bob)
    services.trade_mark_paid(trade_id=trade.pk, actor=bob)
    monkeypatch.setattr(transitions, "_enqueue", lambda settlement_id: None)
    services.escrow_release(trade_id=trade.pk, actor=alice)
    monkeypatch.undo()
    settlement = Settlement.objects.get(trade=trade)
    assert settlement.status == Settlement.Status.PENDING
    # when it is older than the re-queue delay and the sweeper runs
    Settlement.objects.filter(pk=settlement.pk).update(
        queued_at=timezone.now() - timedelta(minutes=5)
    )
    assert services.settlements_requeue_stale() == 1
    # then the worker settles it, exactly once
    wait_for(lambda: _state(trade.pk) == Trade.State.COMPLETED)
    assert services.settlements_requeue_stale() == 0
    assert Transfer.objects.filter(reference=trade.pk, kind="trade_payout").count() == 1


def test_expiry_by_the_periodic_task(celery_worker_process, alice, bob):
    from escrow.tasks import expire_overdue_trades

    trade = make_trade(alice, bob)
    Trade.objects.filter(pk=trade.pk).update(payment_deadline=timezone.now())
    expire_overdue_trades.delay()
    wait_for(lambda: _state(trade.pk) == Trade.State.EXPIRED)
    assert balance_available(user=alice, asset_code="BTC") == Decimal("1")


def test_a_settlement_batch_notifies_through_a_task(celery_worker_process, alice, bob, monkeypatch):
    # given three released trades waiting in the outbox
    from notifications.models import Notification

    monkeypatch.setattr(transitions, "_enqueue", lambda settlement_id: None)
    trades = [make_trade(alice, bob, amount="0.01") for _ in range(3)]
    for trade in trades:
        services.trade_mark_paid(trade_id=trade.pk, actor=bob)
        services.escrow_release(trade_id=trade.pk, actor=alice)
    # when one batch settles them here, the notifying is handed to the worker
    assert services.settlements_execute_pending(batch_size=10) == 3
    # then both parties hear of each completion, once
    wait_for(lambda: Notification.objects.filter(kind="completed").count() == 6)
    assert sorted(
        Notification.objects.filter(kind="completed").values_list("user__username", "trade_id")
    ) == sorted((who, t.pk) for t in trades for who in ("alice", "bob"))
