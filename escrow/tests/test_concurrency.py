"""Races on real PostgreSQL with real threads, each on its own connection: row locks, not hopes."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.utils import timezone

from common.errors import ApplicationError
from conftest import require_postgres
from escrow import services
from escrow import services as escrow_services
from escrow.models import Settlement, Trade
from escrow.services import transitions
from ledger import services as ledger
from ledger.models import Transfer
from ledger.replay import verify_ledger
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db(transaction=True)


def run_at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Start every call on its own thread and connection, released together by a barrier."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def worker(i: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait()
            results[i] = call()
        except Exception as exc:
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing call hung (deadlock?)"
    return results


def outcome(result: object) -> str:
    if isinstance(result, ApplicationError):
        return f"{type(result).__name__}:{result.status}"
    if isinstance(result, Exception):
        return f"CRASH:{type(result).__name__}:{result}"
    return "ok"


@pytest.fixture(autouse=True)
def _pg() -> None:
    require_postgres()


def test_release_cancel_expire_race_on_a_funded_trade(alice, bob):
    # given a funded trade whose payment window just ended
    trade = make_trade(alice, bob)
    Trade.objects.filter(pk=trade.pk).update(payment_deadline=timezone.now() - timedelta(seconds=1))
    calls: list[Callable[[], object]] = []
    for i in range(20):
        if i % 3 == 0:
            calls.append(lambda: services.escrow_release(trade_id=trade.pk, actor=alice))
        elif i % 3 == 1:
            calls.append(lambda: services.trade_cancel(trade_id=trade.pk, actor=bob))
        else:
            calls.append(lambda: services.escrow_expire(trade_id=trade.pk))
    # when 20 threads act at once
    results = run_at_once(calls)
    # then exactly one wins, every loser gets a clear domain error, nothing crashed
    counts = Counter(outcome(r) for r in results)
    assert counts["ok"] == 1, counts
    assert not [k for k in counts if k.startswith("CRASH")], counts
    assert all(isinstance(r, ApplicationError) and r.message for r in results if outcome(r) != "ok")
    trade.refresh_from_db()
    assert trade.state in (Trade.State.CANCELLED, Trade.State.EXPIRED)
    # the hold was voided exactly once and the seller has everything back
    assert Transfer.objects.filter(pending=trade.escrow_hold).count() == 1
    assert ledger.account_for_user(user=alice, asset=trade.asset).available == Decimal("1")
    assert Offer.objects.get(pk=trade.offer_id).available == Decimal("0.5")


def test_release_race_on_a_paid_trade_settles_once(alice, bob):
    trade = make_trade(alice, bob)
    services.trade_mark_paid(trade_id=trade.pk, actor=bob)
    calls: list[Callable[[], object]] = []
    for i in range(20):
        if i % 3 == 0:
            calls.append(lambda: services.trade_cancel(trade_id=trade.pk, actor=bob))
        elif i % 3 == 1:
            calls.append(lambda: services.escrow_expire(trade_id=trade.pk))
        else:
            calls.append(lambda: services.escrow_release(trade_id=trade.pk, actor=alice))
    results = run_at_once(calls)
    counts = Counter(outcome(r) for r in results)
    assert counts["ok"] == 1, counts
    assert counts["InvalidTransition:409"] == 19, counts
    trade.refresh_from_db()
    # (a session's Celery worker, if one is running, may already have settled it)
    assert trade.state in (Trade.State.RELEASING, Trade.State.COMPLETED)
    assert Settlement.objects.filter(trade=trade).count() == 1
    # and settling it from several threads at once posts once
    settlement = Settlement.objects.get(trade=trade)
    run_at_once([lambda: services.settlement_execute(settlement_id=settlement.pk)] * 8)
    trade.refresh_from_db()
    assert trade.state == Trade.State.COMPLETED
    assert Transfer.objects.filter(reference=trade.pk, kind="trade_payout").count() == 1
    assert ledger.account_for_user(user=bob, asset=trade.asset).available == trade.buyer_receives
    ledger.ledger_seal_pending()
    assert verify_ledger().ok


def test_many_takers_never_oversell_the_offer(alice, refdata):
    from accounts.tests.factories import UserFactory

    # given an offer with only 0.05 BTC left and 25 takers who each want 0.01
    fund(alice, "BTC", "1")
    offer = make_offer(alice, amount="0.05")
    takers = [UserFactory(username=f"taker{i}") for i in range(25)]
    results = run_at_once(
        [
            lambda u=u: escrow_services.trade_open(offer_id=offer.pk, taker=u, amount="0.01")
            for u in takers
        ]
    )
    counts = Counter(outcome(r) for r in results)
    # then exactly five trades open, the rest are told the offer ran out
    assert counts["ok"] == 5, counts
    assert counts["Conflict:409"] == 20, counts
    assert all("left" in r.message for r in results if isinstance(r, ApplicationError))
    offer.refresh_from_db()
    assert offer.available == 0
    assert sum(t.amount for t in Trade.objects.filter(offer=offer)) == Decimal("0.05")


def test_takers_never_take_more_than_the_seller_holds(alice, refdata):
    from accounts.tests.factories import UserFactory

    # given a sell offer of 0.5 BTC whose maker now holds only 0.03 BTC (withdrew the rest)
    fund(alice, "BTC", "0.5")
    offer = make_offer(alice, amount="0.5")
    ledger.withdrawal_request(
        user=alice, asset_code="BTC", amount="0.47", address="bc1qwithdrawaddr"
    )
    takers = [UserFactory(username=f"t{i}") for i in range(12)]
    results = run_at_once(
        [
            lambda u=u: escrow_services.trade_open(offer_id=offer.pk, taker=u, amount="0.01")
            for u in takers
        ]
    )
    counts = Counter(outcome(r) for r in results)
    # 0.01 + fee per trade: two fit in 0.03, never more
    assert counts["ok"] == 2, counts
    assert counts["InsufficientFunds:409"] == 10, counts
    account = ledger.account_for_user(user=alice, asset=offer.asset)
    assert account.available >= 0
    assert account.debits_pending + account.debits_posted <= account.credits_posted


def test_withdrawals_racing_a_take_never_overdraw(alice, bob, carol):
    fund(alice, "BTC", "0.1")
    offer = make_offer(alice, amount="0.1", max_fiat="100000")
    calls: list[Callable[[], object]] = [
        lambda: ledger.withdrawal_request(
            user=alice, asset_code="BTC", amount="0.06", address="bc1qwithdrawaddr"
        )
        for _ in range(5)
    ]
    calls += [lambda: escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.05")] * 3
    results = run_at_once(calls)
    assert not [r for r in results if outcome(r).startswith("CRASH")], results
    account = ledger.account_for_user(user=alice, asset=offer.asset)
    assert account.available >= 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM ledger_ledgeraccount WHERE kind <> 'world' "
            "AND debits_posted + debits_pending > credits_posted"
        )
        assert cursor.fetchone()[0] == 0


def test_workers_settle_batches_in_parallel_into_one_chain(alice, bob, carol, monkeypatch):
    # given 30 released trades whose settlements wait in the outbox
    monkeypatch.setattr(transitions, "_enqueue", lambda settlement_id: None)
    fund(alice, "BTC", "5")
    fund(carol, "BTC", "5")
    offers = [make_offer(alice, amount="2"), make_offer(carol, amount="2")]
    trades = []
    for i in range(30):
        trade = escrow_services.trade_open(offer_id=offers[i % 2].pk, taker=bob, amount="0.01")
        services.trade_mark_paid(trade_id=trade.pk, actor=bob)
        services.escrow_release(trade_id=trade.pk, actor=trade.seller)
        trades.append(trade)
    # when four workers claim batches (SKIP LOCKED) while two sequencers seal, all at once
    calls: list[Callable[[], object]] = [
        lambda: services.settlements_execute_pending(batch_size=4) for _ in range(4)
    ]
    calls += [ledger.ledger_seal_pending for _ in range(2)]
    for _ in range(4):
        results = run_at_once(calls)
        assert not [r for r in results if isinstance(r, Exception)], results
    ledger.ledger_seal_pending()
    # then every trade completed once, and the chain is one sequence without gaps or forks
    assert set(
        Trade.objects.filter(pk__in=[t.pk for t in trades]).values_list("state", flat=True)
    ) == {Trade.State.COMPLETED}
    assert Transfer.objects.filter(kind="trade_payout").count() == 30
    seqs = list(Transfer.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    report = verify_ledger()
    assert report.ok, report.errors
