"""Database outage: PostgreSQL restarts (pg_ctl restart -m fast) while bots trade over the API
and a worker settles. Requests in flight and during the restart fail with a clean 503 JSON
error, nothing is half-written, and the site recovers by itself."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import connections
from django.db.models import Sum

from conftest import wait_for
from escrow.models import Settlement, Trade
from ledger.models import LedgerAccount, Transfer
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer

from .conftest import (
    TRADER_PASSWORD,
    ApiClient,
    Reply,
    assert_ledger_verifies,
    assert_settled_once,
    make_traders,
    require,
)

pytestmark = pytest.mark.django_db(transaction=True)

BOTS = 4
CYCLES_AFTER = 2  # full trades each bot completes after the restart


@dataclass
class Bot:
    """Takes, marks paid and releases in a loop (the buyer's and the seller's calls); a step
    that gets a 503 or no answer is retried, with the same Idempotency-Key, until it passes."""

    buyer: ApiClient
    seller: ApiClient
    offer_id: int
    replies: list[tuple[str, Reply]] = field(default_factory=list)
    trades: list[int] = field(default_factory=list)
    completed_cycles: int = 0
    surprises: list[str] = field(default_factory=list)

    def step(self, name: str, api: ApiClient, path: str, body: dict, stop: threading.Event):
        key = str(uuid.uuid4())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            reply = api.post(path, body, key=key, timeout=30)
            self.replies.append((name, reply))
            if reply.status in (200, 201):
                return reply
            if reply.status == 409 and reply.code == "idempotency_in_progress":
                # the first attempt died mid-way and left its key claimed: a new key
                self.surprises.append(f"{name}: key left in progress")
                key = str(uuid.uuid4())
            elif reply.status == 409 and reply.code == "idempotency_answer_lost":
                # the work was done, the answer lost (a 503 after the commit): look it up, as
                # the message says, rather than do it twice
                self.surprises.append(f"{name}: answer lost")
                return self.look_up(name, api) if name == "take" else reply
            elif reply.status == 409 and name != "take":
                return reply  # already done by an attempt that answered 503 after committing
            elif reply.status not in (0, 503):
                self.surprises.append(f"{name}: {reply.status} {reply.data!r:.200}")
                return None
            # a GET also tells whether reads are back
            self.replies.append(("wallets", api.get("/wallets/", timeout=30)))
            stop.wait(0.05)
        raise AssertionError(f"{name} never passed")

    def look_up(self, name: str, api: ApiClient) -> SimpleNamespace:
        listed = api.get("/trades/", timeout=30)
        self.replies.append(("trades", listed))
        new = [t["id"] for t in listed.data["results"] if t["id"] not in self.trades]
        require(len(new) == 1, f"{name}: answer lost, and {len(new)} unknown trades listed")
        return SimpleNamespace(data={"id": new[0]})

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                take = self.step(
                    "take", self.buyer, f"/offers/{self.offer_id}/take/", {"amount": "0.001"}, stop
                )
                if take is None:
                    return
                trade = take.data["id"]
                self.trades.append(trade)
                for name, api in (("mark-paid", self.buyer), ("release", self.seller)):
                    # the seller confirms a release with the account password (no 2FA)
                    body = {"password": TRADER_PASSWORD} if name == "release" else {}
                    if self.step(name, api, f"/trades/{trade}/{name}/", body, stop) is None:
                        return
                self.completed_cycles += 1
        finally:
            connections.close_all()


@pytest.mark.celery_worker
def test_postgres_restart_gives_clean_503s_and_the_site_recovers(
    refdata, live_server, fault_worker, postgres_control
):
    (seller, seller_token), *buyers = make_traders("dbdown", BOTS + 1)
    fund(seller, "BTC", "1")
    offer = make_offer(seller, amount="0.9", min_fiat="10")
    seller_api = ApiClient(live_server.url, seller_token)
    bots = [Bot(ApiClient(live_server.url, token), seller_api, offer.pk) for _, token in buyers]
    worker = fault_worker(concurrency=2)
    worker.start()
    stop = threading.Event()
    threads = [threading.Thread(target=b.run, args=(stop,), daemon=True) for b in bots]
    for thread in threads:
        thread.start()
    try:
        # given bots trading and the worker settling
        wait_for(lambda: all(b.completed_cycles >= 1 for b in bots), timeout=60)
        before = [b.completed_cycles for b in bots]
        marks = [len(b.replies) for b in bots]
        # when PostgreSQL restarts under them (this thread's own connection dies with it)
        restart_seconds = postgres_control.restart()
        connections.close_all()
        # then every bot goes on by itself: more full trades after the restart
        wait_for(
            lambda: all(
                b.completed_cycles >= n + CYCLES_AFTER for b, n in zip(bots, before, strict=True)
            ),
            timeout=120,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not [
        s for b in bots for s in b.surprises if "in progress" not in s and "answer lost" not in s
    ], [b.surprises for b in bots]

    # every answer was a success, a race loss or a clean 503 in JSON: never a 500, an HTML page
    # or a dropped connection
    replies = [r for b in bots for _, r in b.replies]
    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {200, 201, 409, 503}, statuses
    failed = [r for r in replies if r.status == 503]
    assert failed, "no request met the outage: the restart was not exercised"
    assert all(r.is_json_error and r.code == "unavailable" for r in failed), failed[:3]
    during = Counter(
        f"{name} {r.status}" for b, m in zip(bots, marks, strict=True) for name, r in b.replies[m:]
    )

    # the worker settles every release, each exactly once (those whose task failed against the
    # restarting database were retried by Celery, or re-queued by the sweeper)
    from escrow import services

    def settled() -> bool:
        services.settlements_requeue_stale()
        return not Settlement.objects.filter(status=Settlement.Status.PENDING).exists()

    wait_for(settled, timeout=60, interval=0.25)
    released = list(Trade.objects.filter(settlement__isnull=False))
    assert_settled_once(released)

    # nothing half-written: every trade holds its escrow or settled it, the offer and the
    # seller's balance account for every live trade, the ledger verifies
    trades = list(Trade.objects.all())
    known = {t for b in bots for t in b.trades}
    orphans = [t for t in trades if t.pk not in known]
    for trade in trades:
        hold = Transfer.objects.get(idempotency_key=f"trade:{trade.pk}:hold")
        assert trade.escrow_hold_id == hold.pk
        escrow = LedgerAccount.objects.get(code=f"escrow:trade:{trade.pk}")
        if trade.state == Trade.State.COMPLETED:
            assert escrow.balance == 0
            assert escrow.credits_pending == 0
        else:
            assert trade.state in (Trade.State.FUNDED, Trade.State.PAID), trade.state
            assert escrow.credits_pending == trade.hold_amount
    offer.refresh_from_db()
    live = Trade.objects.exclude(state__in=[Trade.State.CANCELLED, Trade.State.EXPIRED])
    assert offer.available == offer.amount - live.aggregate(s=Sum("amount"))["s"]
    assert Offer.objects.get(pk=offer.pk).available >= 0
    seller_account = LedgerAccount.objects.get(code=f"user:{seller.pk}:BTC")
    assert seller_account.available == Decimal("1") - sum(t.hold_amount for t in live)
    assert_ledger_verifies()
    print(
        f"\n[db-outage] pg_ctl restart -m fast took {restart_seconds:.1f}s; replies: "
        f"{dict(statuses)}; from the restart on: {dict(during)}; "
        f"keys left in progress: {sum(len(b.surprises) for b in bots)}; trades {len(trades)}, "
        f"taken but unknown to their bot (a 503 after the commit): {len(orphans)}"
    )


def test_a_pool_whose_connections_died_answers_503_within_its_timeout_and_recovers(
    refdata, live_server, postgres_control, settings
):
    """PostgreSQL down for a while, not just restarting: every pooled connection is dead and no
    new one can be made. A request waits the pool's timeout at most (never hangs: the client
    gives up 20 s later and would record no answer), answers the clean 503, and the pool
    reconnects by itself once the database is back."""
    pool = settings.DATABASES["default"]["OPTIONS"].get("pool")
    if not pool:
        pytest.skip("DATABASE_POOL is off: persistent connections")
    ((_, token),) = make_traders("pooldown", 1)
    api = ApiClient(live_server.url, token)
    # given a pool holding live connections
    assert api.get("/wallets/").status == 200
    # when PostgreSQL goes down
    postgres_control.stop()
    try:
        replies = [api.get("/wallets/", timeout=pool["timeout"] + 20) for _ in range(2)]
    finally:
        postgres_control.ensure_up()
    connections.close_all()  # this thread's connection died with the old server
    # then each request got the clean 503 (a PoolTimeout is an OperationalError)
    assert [(r.status, r.code) for r in replies] == [(503, "unavailable")] * 2, replies
    # and once it is back, the same server answers again by itself
    wait_for(lambda: api.get("/wallets/").status == 200, timeout=60, interval=0.25)


class _FailsOnce:
    """Stands in for a callable of the response path: the first call raises OperationalError,
    as when the connection dies right after the service's transaction committed (the live
    test above meets this window now and then; here it is met every time)."""

    def __init__(self, real) -> None:
        self.real = real
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            from django.db import OperationalError

            raise OperationalError("server closed the connection unexpectedly")
        return self.real(*args, **kwargs)


@pytest.mark.parametrize("endpoint", ["take", "withdrawal"])
def test_a_retry_after_a_503_never_repeats_committed_work(
    endpoint, refdata, live_server, monkeypatch
):
    import escrow.api.trades
    import ledger.api.views

    (seller, seller_token), (_, buyer_token) = make_traders("retry", 2)
    fund(seller, "BTC", "1")
    offer = make_offer(seller, amount="0.5", min_fiat="10")
    if endpoint == "take":
        api, path = ApiClient(live_server.url, buyer_token), f"/offers/{offer.pk}/take/"
        body = {"amount": "0.01"}
        fault = _FailsOnce(escrow.api.trades.trade_answer)
        monkeypatch.setattr(escrow.api.trades, "trade_answer", fault)
    else:
        api, path = ApiClient(live_server.url, seller_token), "/wallets/BTC/withdrawals/"
        body = {"amount": "0.1", "address": "bc1qfaultsaddress", "password": TRADER_PASSWORD}
        fault = _FailsOnce(ledger.api.views.WithdrawalOut)
        monkeypatch.setattr(ledger.api.views, "WithdrawalOut", fault)
    key = str(uuid.uuid4())
    first = api.post(path, body, key=key)
    # a clean 503 (or, once fixed, perhaps the answer itself)
    require(first.status in (201, 503), f"first attempt: {first}")
    retry = api.post(path, body, key=key)
    from ledger.models import Withdrawal

    made = Trade.objects.count() if endpoint == "take" else Withdrawal.objects.count()
    held = LedgerAccount.objects.get(code=f"user:{seller.pk}:BTC").debits_pending
    print(f"\n[retry-after-503] {endpoint}: retry {retry.status}; {made} made; {held} held")
    assert made == 1, f"the retry with the same key made a second one ({retry.status})"
    # the retry is told the work was done and its answer lost, and changes nothing more
    assert first.status == 503, first
    assert retry.status == 409, retry
    assert retry.data["error"]["code"] == "idempotency_answer_lost", retry
    expected = Decimal("0.01") if endpoint == "take" else Decimal("0.1")
    assert held >= expected
