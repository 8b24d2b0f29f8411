"""Broker outage: Redis stops while users keep trading through the API; the outbox is in
PostgreSQL, so trades are taken, paid and released all the same, and once Redis is back (same
port, same options, but empty: `shutdown nosave` lost every queued message) settlement catches
up by itself, nothing lost, nothing doubled."""

from __future__ import annotations

import statistics
import time
from decimal import Decimal

import pytest

from conftest import wait_for
from escrow.models import Settlement, Trade
from escrow.tasks import settle_pending, sweep_settlements
from marketplace.tests.factories import fund, make_offer

from .conftest import (
    ApiClient,
    assert_ledger_verifies,
    assert_settled_once,
    assert_user_balances,
    expected_user_balances,
    make_traders,
    require,
    server_idle,
    wait_quietly,
)

pytestmark = pytest.mark.django_db(transaction=True)

LOCAL_CACHE = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# The seller confirms releases and withdrawals with the account password (no 2FA).
FUND_PASSWORD = {"password": "demo-pass-123"}


def _trade_through_the_api(seller: ApiClient, buyer: ApiClient, offer_id: int) -> dict:
    """Take, mark paid, release: the three writes of a trade; returns their replies."""
    replies = {"take": buyer.post(f"/offers/{offer_id}/take/", {"amount": "0.002"}, timeout=30)}
    assert replies["take"].status == 201, replies["take"]
    trade_id = replies["take"].data["id"]
    replies["mark-paid"] = buyer.post(f"/trades/{trade_id}/mark-paid/", timeout=30)
    assert replies["mark-paid"].status == 200, replies["mark-paid"]
    replies["release"] = seller.post(f"/trades/{trade_id}/release/", FUND_PASSWORD, timeout=30)
    assert replies["release"].status == 200, replies["release"]
    # (a worker may settle it before the response is built)
    assert replies["release"].data["state"] in ("releasing", "completed")
    replies["id"] = trade_id
    return replies


@pytest.fixture
def market(refdata, live_server):
    (seller, seller_token), *buyers = make_traders("broker", 4)
    fund(seller, "BTC", "1")
    offer = make_offer(seller, amount="0.5", min_fiat="10")
    seller_api = ApiClient(live_server.url, seller_token)
    buyer_apis = [(user, ApiClient(live_server.url, token)) for user, token in buyers]
    yield seller, seller_api, buyer_apis, offer
    for api in [seller_api, *(api for _, api in buyer_apis)]:
        api.close()


@pytest.mark.celery_worker
def test_trading_goes_on_while_redis_is_down_and_settlement_catches_up(
    settings, market, fault_worker, redis_control
):
    # The API's throttles keep their counters in the cache, which is this same Redis: here they
    # count in memory, so that this test is about the broker alone (the Redis cache is the next
    # test).
    settings.CACHES = LOCAL_CACHE
    seller, seller_api, buyers, offer = market
    worker = fault_worker(concurrency=2)
    worker.start()
    # a trade before the outage settles through the worker as usual
    first = _trade_through_the_api(seller_api, buyers[0][1], offer.pk)
    wait_for(lambda: Trade.objects.get(pk=first["id"]).state == Trade.State.COMPLETED)
    normal_release = first["release"].seconds

    # when Redis stops and users keep trading
    redis_control.stop()
    try:
        during = [
            _trade_through_the_api(seller_api, api, offer.pk) for _ in range(2) for _, api in buyers
        ]
        ids = [r["id"] for r in during]
        pending = Settlement.objects.filter(trade_id__in=ids, status="pending").count()
        states = set(Trade.objects.filter(pk__in=ids).values_list("state", flat=True))
    finally:
        # (the root conftest's teardown hook needs the broker: restored here, not only by the
        # fixture)
        redis_control.start()  # on the same port, empty
    back = time.monotonic()
    # then the API answered every write normally (asserted inside), each release's settlement
    # waited in the outbox, and nothing settled without a broker
    assert pending == len(ids)
    assert states == {"releasing"}
    latency = {step: [r[step].seconds for r in during] for step in ("take", "mark-paid", "release")}

    # then the worker reconnects by itself (or, if it exited, its supervisor starts it again),
    # and beat's periodic tasks (sent here as beat sends them) re-queue and settle the
    # backlog: every trade completed exactly once
    worker.wait_answering(timeout=60)
    reconnected = time.monotonic() - back
    sweep_settlements.delay()
    settle_pending.delay()
    wait_for(
        lambda: Trade.objects.filter(pk__in=ids, state=Trade.State.COMPLETED).count() == len(ids),
        timeout=60,
    )
    caught_up = time.monotonic() - back
    trades = list(Trade.objects.filter(pk__in=[first["id"], *ids]))
    assert_settled_once(trades)
    assert_user_balances("BTC", expected_user_balances(trades, {seller.pk: Decimal("1")}))
    assert_ledger_verifies()
    print(
        "\n[broker-outage] API latency with Redis down, median/max s: "
        + ", ".join(
            f"{step} {statistics.median(v):.2f}/{max(v):.2f}" for step, v in latency.items()
        )
        + f" (release with Redis up: {normal_release:.2f}); worker exits during the outage: "
        f"{worker.exits} {worker.exit_reasons() if worker.exits else ''}; worker answering {reconnected:.1f}s and backlog of {len(ids)} settled {caught_up:.1f}s after Redis was "
        "back"
    )


def test_api_answers_while_redis_is_down(market, redis_control):
    # with the product's own settings: the throttles' cache is the same Redis as the broker
    # (they let requests through when it is down)
    _, _, buyers, offer = market
    buyer = buyers[0][1]
    assert buyer.get("/wallets/").status == 200
    redis_control.stop()
    try:
        take = buyer.post(f"/offers/{offer.pk}/take/", {"amount": "0.002"})
        wallets = buyer.get("/wallets/")
    finally:
        redis_control.start()
    print(f"\n[redis-down, Redis cache] take: {take.status} after {take.seconds:.2f}s")
    assert take.status == 201, take
    assert wallets.status == 200, wallets
    assert max(take.seconds, wallets.seconds) < 2


def test_api_answers_promptly_while_redis_hangs(market, redis_control):
    _, _, buyers, _ = market
    buyer = buyers[0][1]
    require(buyer.get("/wallets/").status == 200, "the API does not answer to begin with")
    redis_control.freeze()
    try:
        wallets = buyer.get("/wallets/", timeout=15)
    finally:
        redis_control.thaw()
    print(f"\n[redis-frozen, Redis cache] wallets: {wallets.status} after {wallets.seconds:.2f}s")
    assert wallets.status == 200, wallets
    # (two throttle lookups with 0.5 s socket timeouts each: about 1-1.6 s measured)
    assert wallets.seconds < 3, wallets


def test_release_answers_promptly_while_the_broker_hangs(settings, market, redis_control):
    settings.CACHES = LOCAL_CACHE  # the throttles apart (previous test): the broker alone
    _, seller_api, buyers, offer = market
    buyer = buyers[0][1]
    take = buyer.post(f"/offers/{offer.pk}/take/", {"amount": "0.002"})
    require(take.status == 201, f"take: {take}")
    paid = buyer.post(f"/trades/{take.data['id']}/mark-paid/")
    require(paid.status == 200, f"mark-paid: {paid}")
    redis_control.freeze()
    try:
        release = seller_api.post(f"/trades/{take.data['id']}/release/", FUND_PASSWORD, timeout=30)
    finally:
        redis_control.thaw()
        # the server thread of a timed-out request goes on once Redis resumes: let it finish
        # before the test's teardown empties the database
        for api in [seller_api, *(api for _, api in buyers)]:
            api.close()
        idle = wait_quietly(server_idle, timeout=30)
    require(idle, "a live-server thread still runs after Redis resumed")
    print(f"\n[broker-frozen] release: {release.status or release.error} {release.seconds:.2f}s")
    # the release itself committed either way: the outbox has it
    require(Settlement.objects.filter(trade_id=take.data["id"]).exists(), "no settlement")
    assert release.status == 200, release
    assert release.seconds < 3, release


def test_a_withdrawal_answers_normally_while_redis_is_down(market, redis_control):
    from ledger.models import Withdrawal

    seller, seller_api, _, _ = market
    redis_control.stop()
    try:
        reply = seller_api.post(
            "/wallets/BTC/withdrawals/",
            {"amount": "0.1", "address": "bc1qfaultsaddress", **FUND_PASSWORD},
        )
    finally:
        redis_control.start()
    made = Withdrawal.objects.filter(user=seller).count()
    print(f"\n[redis-down] withdrawal: {reply.status} {reply.data!r:.120}; {made} created")
    require(made <= 1, f"{made} withdrawals from one request")
    assert reply.status == 201, reply
    assert made == 1
