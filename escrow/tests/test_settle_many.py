"""Settlements in batches: a release publishes `settle_many` (common.outbox merges the ids of the
releases waiting in a process into one message); `settlements_execute_many` settles those ids
that are still pending, waiting for any another worker holds, plus free pending ones up to the
batch size, each exactly once, alongside `settle` (messages from before) and `settle_pending`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import require_postgres, wait_for
from escrow import services
from escrow.models import Settlement, Trade
from escrow.services import transitions
from escrow.tasks import settle
from escrow.tests.test_concurrency import run_at_once
from ledger import services as ledger
from ledger.models import Transfer
from ledger.replay import verify_ledger
from marketplace.tests.factories import fund, make_offer


def _released(sellers: list, buyer, n: int) -> list[Trade]:
    """n trades released, taken in turn from one offer of each seller."""
    offers = [make_offer(seller, amount="2") for seller in sellers]
    trades = []
    for i in range(n):
        offer = offers[i % len(offers)]
        trade = services.trade_open(offer_id=offer.pk, taker=buyer, amount="0.01")
        services.trade_mark_paid(trade_id=trade.pk, actor=buyer)
        trades.append(services.escrow_release(trade_id=trade.pk, actor=trade.seller))
    return trades


def _settlement_ids(trades: list[Trade]) -> list[int]:
    return list(
        Settlement.objects.filter(trade__in=trades).order_by("pk").values_list("pk", flat=True)
    )


def _settled_once(trades: list[Trade]) -> None:
    pks = [t.pk for t in trades]
    assert set(Trade.objects.filter(pk__in=pks).values_list("state", flat=True)) == {
        Trade.State.COMPLETED
    }
    assert set(Settlement.objects.filter(trade_id__in=pks).values_list("status", "attempts")) == {
        (Settlement.Status.DONE, 1)
    }
    for kind in ("trade_payout", "trade_fee"):
        assert sorted(
            Transfer.objects.filter(kind=kind, reference__in=pks).values_list(
                "reference", flat=True
            )
        ) == sorted(pks)


@pytest.mark.django_db
def test_settle_many_settles_pending_ids_once_plus_free_ones(alice, bob, monkeypatch):
    require_postgres()
    monkeypatch.setattr(transitions, "_enqueue", lambda settlement_id: None)
    fund(alice, "BTC", "5")
    trades = _released([alice], bob, 6)
    ids = _settlement_ids(trades)

    # two named ids and room for two more: the named ones, then the oldest free ones
    assert services.settlements_execute_many(settlement_ids=[ids[4], ids[5]], batch_size=4) == 4
    assert set(
        Settlement.objects.filter(status=Settlement.Status.DONE).values_list("pk", flat=True)
    ) == {ids[0], ids[1], ids[4], ids[5]}
    # ids already done (a redelivered message) and unknown ones are skipped; the rest settle
    assert services.settlements_execute_many(settlement_ids=[ids[0], ids[2], 10**9]) == 1
    assert services.settlements_execute_many(settlement_ids=ids, batch_size=100) == 1
    assert services.settlements_execute_many(settlement_ids=ids, batch_size=100) == 0
    _settled_once(trades)
    report = verify_ledger()
    assert report.ok, report.errors


@pytest.mark.django_db(transaction=True)
def test_settle_many_racing_settle_and_settle_pending_settles_each_once(
    alice, bob, carol, monkeypatch
):
    require_postgres()
    monkeypatch.setattr(transitions, "_enqueue", lambda settlement_id: None)
    fund(alice, "BTC", "5")
    fund(carol, "BTC", "5")
    trades = _released([alice, carol], bob, 36)
    ids = _settlement_ids(trades)

    # when workers take overlapping batches of ids, single messages and the catch-up, all at once
    calls: list[Callable[[], object]] = [
        lambda: services.settlements_execute_many(settlement_ids=ids[0:14], batch_size=16),
        lambda: services.settlements_execute_many(settlement_ids=ids[10:24][::-1], batch_size=4),
        lambda: services.settlements_execute_many(settlement_ids=ids[20:36], batch_size=1),
        lambda: services.settlements_execute_many(settlement_ids=ids[::3], batch_size=20),
        lambda: services.settlement_execute(settlement_id=ids[12], batch_size=5),
        lambda: services.settlement_execute(settlement_id=ids[30], batch_size=1),
        lambda: services.settlements_execute_pending(batch_size=6),
        ledger.ledger_seal_pending,
    ]
    results = run_at_once(calls)
    assert not [r for r in results if isinstance(r, Exception)], results
    # then every settlement was settled by exactly one of them
    assert sum(r for r in results[:7] if isinstance(r, int)) == 36
    _settled_once(trades)
    ledger.ledger_seal_pending()
    seqs = list(Transfer.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    report = verify_ledger()
    assert report.ok, report.errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.celery_worker
def test_releases_settle_through_settle_many_on_the_worker(
    celery_worker_process, alice, bob, monkeypatch
):
    # given releases published as they are (settle_many, merged by the publisher)
    fund(alice, "BTC", "5")
    trades = _released([alice], bob, 5)
    # then the worker settles each once
    wait_for(lambda: not Settlement.objects.exclude(status=Settlement.Status.DONE).exists())
    _settled_once(trades)

    # and a `settle` message from before settle_many (in a broker during a deploy) still works
    offer = make_offer(alice, amount="0.5")
    trade = services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
    services.trade_mark_paid(trade_id=trade.pk, actor=bob)
    with monkeypatch.context() as patched:
        patched.setattr(transitions, "_enqueue", lambda settlement_id: None)
        services.escrow_release(trade_id=trade.pk, actor=alice)
    settle.delay(Settlement.objects.get(trade=trade).pk)
    wait_for(lambda: Trade.objects.filter(pk=trade.pk, state=Trade.State.COMPLETED).exists())
    _settled_once([*trades, trade])
    report = verify_ledger()
    assert report.ok, report.errors
