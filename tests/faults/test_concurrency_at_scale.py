"""Concurrency at scale: 200 takers over HTTP on one offer with little left, and withdrawals
racing trades on one balance, on real PostgreSQL with real threads."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer
from django.db import connection

from common.errors import ApplicationError, InsufficientFunds
from escrow import services as escrow
from escrow import services as escrow_services
from escrow.models import Trade
from ledger import services as ledger
from ledger.models import LedgerAccount, Withdrawal
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer

from .conftest import (
    ApiClient,
    Watch,
    assert_ledger_verifies,
    make_traders,
    overdrawn_accounts,
    require,
    run_together,
    wait_quietly,
)

pytestmark = pytest.mark.django_db(transaction=True)

TAKERS = 200


def _connections_now() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [str(cursor.fetchone()[0])]


def test_200_takers_over_http_never_oversell(refdata, live_server):
    # the live server answers concurrent requests, each on its own thread and connection
    httpd = live_server.thread.httpd
    assert isinstance(httpd, ThreadedWSGIServer)
    # Django's test server listens with a backlog of 10 (WSGIServer.request_queue_size): 200
    # simultaneous connects overflow it and the kernel resets some before the application sees
    # them. gunicorn listens with 2048; so does the live server from here on (listen() again
    # on a listening socket resizes its queue).
    httpd.socket.listen(2048)
    (seller, _), (whale, _), *takers = make_traders("taker", TAKERS + 2)
    fund(seller, "BTC", "1")
    offer = make_offer(seller, amount="0.5", min_fiat="10")
    # given an offer with little left: 0.0105 BTC, ten and a half takes of 0.001
    escrow_services.trade_open(offer_id=offer.pk, taker=whale, amount="0.4895")
    left = Offer.objects.get(pk=offer.pk).available
    assert left == Decimal("0.0105")
    clients = [ApiClient(live_server.url, token) for _, token in takers]

    # when 200 takers take 0.001 each at the same moment, over HTTP
    def take(client: ApiClient):
        return lambda: client.post(f"/offers/{offer.pk}/take/", {"amount": "0.001"}, timeout=120)

    with Watch(_connections_now, interval=0.02) as watch:
        replies = run_together([take(c) for c in clients], timeout=240)
    peak_connections = max(int(n) for n in watch.found)

    # then never oversold (nor undersold): exactly ten win, the offer has 0.0005 left
    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {201, 409, 429}, (statuses, Counter(r.error for r in replies))
    won = [r for r in replies if r.status == 201]
    assert len(won) == 10, statuses
    offer.refresh_from_db()
    assert offer.available == left - Decimal("0.010")
    assert offer.available >= 0
    taken = Trade.objects.filter(offer=offer).exclude(taker=whale)
    assert sorted(taken.values_list("pk", flat=True)) == sorted(r.data["id"] for r in won)
    assert sum(taken.values_list("amount", flat=True)) <= left
    # and every loser is told why, in JSON: what is left on the offer
    lost = [r for r in replies if r.status == 409]
    assert len(lost) + statuses[429] == TAKERS - 10
    for reply in lost:
        assert reply.code == "offer_exhausted", reply
        assert f"Only 0.00050000 BTC is left on offer #{offer.pk}" in reply.message, reply
    assert_ledger_verifies()
    seconds = sorted(r.seconds for r in replies)
    print(
        f"\n[200-takers] {dict(statuses)}; latency p50 {seconds[len(seconds) // 2]:.2f}s, "
        f"max {seconds[-1]:.2f}s; up to {peak_connections} server connections at once"
    )


def test_withdrawals_racing_trades_never_overdraw_a_balance(refdata):
    """One seller's 1 BTC is claimed at once by takes of their offer (escrow holds) and their own
    withdrawals, while, from the second round on, rejected withdrawals give some back: more is
    asked than there is. No balance is ever negative, as seen by a poller
    during the race and by the checks after it, and each refusal is a clean InsufficientFunds."""
    (seller, _), *buyer_rows = make_traders("drain", 31)
    buyers = [user for user, _ in buyer_rows]
    fund(seller, "BTC", "1")
    offer = make_offer(seller, amount="1", min_fiat="10", max_fiat="100000")
    trades: list[Trade] = []
    withdrawals: list[Withdrawal] = []
    outcomes: Counter[str] = Counter()

    def take(buyer):
        return lambda: escrow_services.trade_open(offer_id=offer.pk, taker=buyer, amount="0.02")

    def withdraw():
        return ledger.withdrawal_request(
            user=seller, asset_code="BTC", amount="0.03", address="bc1qfaultsaddress"
        )

    def seller_columns() -> list[str]:
        found = overdrawn_accounts()
        account = LedgerAccount.objects.get(code=f"user:{seller.pk}:BTC")
        if account.available < 0:
            found.append(f"seller available {account.available}")
        return found

    with Watch(seller_columns, interval=0.002) as watch:
        for round_ in range(3):
            calls = [take(b) for b in buyers] + [withdraw] * 15
            kinds = ["take"] * len(buyers) + ["withdraw"] * 15
            if round_:
                # give some back while others take: reject every other pending withdrawal
                # (cancellations would give back too, but deadlock with takes: see below)
                pending = [w for w in withdrawals if w.status != Withdrawal.Status.FAILED]
                for w in pending[::2]:
                    calls.append(
                        lambda w=w: ledger.withdrawal_reject(
                            withdrawal_id=w.pk, reason="x", actor=None
                        )
                    )
                    kinds.append("reject")
            for kind, result in zip(kinds, run_together(calls, timeout=120), strict=True):
                if isinstance(result, InsufficientFunds):
                    outcomes[f"{kind} refused: insufficient funds"] += 1
                elif isinstance(result, ApplicationError):
                    outcomes[f"{kind} refused: {result.code}"] += 1
                elif isinstance(result, Exception):
                    raise AssertionError(f"a racing {kind} crashed: {result!r}") from result
                else:
                    outcomes[kind] += 1
                    if kind == "take":
                        trades.append(result)
                    elif kind == "withdraw":
                        withdrawals.append(result)
            withdrawals = list(Withdrawal.objects.filter(pk__in=[w.pk for w in withdrawals]))
    assert not watch.found, watch.found[:5]
    assert watch.polls > 20
    # more was asked than there was: some were refused, cleanly
    assert outcomes["take refused: insufficient funds"] > 0, outcomes
    assert outcomes["withdraw refused: insufficient funds"] > 0, outcomes
    assert outcomes["reject"] > 0, outcomes
    assert not overdrawn_accounts()
    # what is held or gone is exactly what succeeded and was not given back
    out = [w for w in withdrawals if w.status != Withdrawal.Status.FAILED]
    account = LedgerAccount.objects.get(code=f"user:{seller.pk}:BTC")
    assert account.available == Decimal(1) - sum(t.hold_amount for t in trades) - sum(
        w.amount for w in out
    )
    assert account.available >= 0
    assert_ledger_verifies()
    print(
        f"\n[withdraw-vs-take] {dict(outcomes)}; seller left with {account.available}; "
        f"{watch.polls} polls during the race"
    )


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_a_cancel_and_a_take_on_one_offer_never_deadlock(refdata):
    """The interleaving made deterministic: the cancel has locked the seller's account and waits
    for its trade's escrow account (held here a moment); meanwhile the take locks the offer and
    waits for the seller's account; then the escrow account is let go."""
    import threading

    from django.db import connections, transaction

    (seller, _), (buyer, _), (taker, _) = make_traders("inversion", 3)
    fund(seller, "BTC", "1")
    offer = make_offer(seller, amount="0.5", min_fiat="10")
    trade = escrow_services.trade_open(offer_id=offer.pk, taker=buyer, amount="0.01")
    escrow_account = trade.escrow_hold.credit_account_id
    # locked second, in pk order
    require(escrow_account > trade.escrow_hold.debit_account_id, "accounts in another order")
    holding, release = threading.Event(), threading.Event()

    def hold_escrow_account():
        with transaction.atomic():
            list(LedgerAccount.objects.select_for_update().filter(pk=escrow_account))
            holding.set()
            release.wait(30)
        connections.close_all()

    holder = threading.Thread(target=hold_escrow_account, daemon=True)
    holder.start()
    require(holding.wait(10), "could not lock the escrow account")
    results: dict[str, object] = {}

    def run(name, call):
        try:
            results[name] = call()
        except Exception as exc:
            results[name] = exc
        finally:
            connections.close_all()

    cancel = threading.Thread(
        target=run,
        args=("cancel", lambda: escrow.trade_cancel(trade_id=trade.pk, actor=buyer)),
        daemon=True,
    )
    cancel.start()
    # the cancel waits for the escrow account
    require(wait_quietly(lambda: _waiting_on_locks() >= 1, timeout=10), "the cancel never waited")
    take = threading.Thread(
        target=run,
        args=(
            "take",
            lambda: escrow_services.trade_open(offer_id=offer.pk, taker=taker, amount="0.01"),
        ),
        daemon=True,
    )
    take.start()
    # the take waits for the seller's account
    require(wait_quietly(lambda: _waiting_on_locks() >= 2, timeout=10), "the take never waited")
    release.set()
    for thread in (holder, cancel, take):
        thread.join(timeout=30)
    print(f"\n[take-vs-cancel] {results}")
    assert isinstance(results.get("cancel"), Trade), results
    assert isinstance(results.get("take"), Trade), results
