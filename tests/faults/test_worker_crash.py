"""Worker crash: the Celery worker is SIGKILLed in the middle of settlement batches, again and
again, and restarted; every released trade still ends `completed` exactly once."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.db import connection

from conftest import wait_for
from escrow import services
from escrow import services as escrow_services
from escrow.models import Settlement, Trade
from escrow.services import transitions
from escrow.tasks import settle
from ledger.models import LedgerAccount
from marketplace.tests.factories import fund, make_offer

from .conftest import (
    assert_ledger_verifies,
    assert_settled_once,
    assert_user_balances,
    expected_user_balances,
    make_traders,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

TRADES = 60
KILLS = 10


def _released_trades(monkeypatch, seller, buyers, count: int) -> list[Trade]:
    """`count` trades taken, paid and released; their settlements wait in the outbox because the
    broker never heard of them (_enqueue is a no-op meanwhile)."""
    monkeypatch.setattr(transitions, "_enqueue", lambda settlement_id: None)
    offer = make_offer(seller, amount="1", min_fiat="10")
    trades = []
    for i in range(count):
        buyer = buyers[i % len(buyers)]
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=buyer, amount="0.001")
        services.trade_mark_paid(trade_id=trade.pk, actor=buyer)
        services.escrow_release(trade_id=trade.pk, actor=seller)
        trades.append(trade)
    monkeypatch.undo()
    return trades


def _settled() -> int:
    return Settlement.objects.filter(status=Settlement.Status.DONE).count()


def _open_transactions() -> int:
    """Other sessions of this database inside a transaction right now (the worker's batch)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        )
        return cursor.fetchone()[0]


def test_settlement_survives_repeated_sigkill_of_the_worker(monkeypatch, refdata, fault_worker):
    # given 60 released trades whose settlements wait in the outbox
    (seller, _), *buyer_rows = make_traders("crash", 7)
    buyers = [user for user, _ in buyer_rows]
    fund(seller, "BTC", "1")
    worker = fault_worker(concurrency=2, SETTLEMENT_BATCH_SIZE=3, FAULTS_SETTLE_DELAY=0.08)
    worker.prewarm(3)  # loading while the trades are made
    trades = _released_trades(monkeypatch, seller, buyers, TRADES)
    assert _settled() == 0
    # and a settle task for each in the broker; the worker settles in batches of 3, each
    # settlement taking a moment inside its batch's transaction
    for trade in trades:
        settle.delay(Settlement.objects.get(trade=trade).pk)

    # when the worker is SIGKILLed as soon as it made progress, and restarted, again and again
    progress, mid_batch = [], 0
    worker.start()
    while worker.kills < KILLS:
        before = _settled()
        assert before < TRADES, f"all settled after only {worker.kills} kills"
        worker.prewarm(3)  # replacements, loading while this one works
        wait_for(lambda before=before: _settled() > before, timeout=60, interval=0.01)
        mid_batch += _open_transactions() > 0
        worker.kill()
        progress.append(_settled())
        worker.start()
    assert progress[-1] < TRADES, "the kills came too late: nothing was left to interrupt"

    # then, running for good (and the sweeper re-queueing what the killed workers had taken
    # from the broker and never acknowledged), it settles the rest
    began = time.monotonic()

    def all_settled() -> bool:
        services.settlements_requeue_stale()
        return _settled() == TRADES

    wait_for(all_settled, timeout=90, interval=0.25)
    catch_up = time.monotonic() - began

    # every trade completed exactly once, the balances add up, the ledger verifies
    for trade in trades:
        trade.refresh_from_db()
    assert_settled_once(trades)
    assert_user_balances("BTC", expected_user_balances(trades, {seller.pk: Decimal("1")}))
    fees = LedgerAccount.objects.get(code="fees:BTC")
    assert fees.balance == sum(t.fee for t in trades)
    assert_ledger_verifies()
    print(
        f"\n[worker-crash] {worker.kills} SIGKILLs ({mid_batch} with a batch transaction open), "
        f"settled after each: {progress}; final catch-up {catch_up:.1f}s; "
        f"worker start {min(worker.startup_seconds):.1f}-{max(worker.startup_seconds):.1f}s"
    )
