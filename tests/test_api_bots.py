"""Two bots, a seller and a buyer, purely over HTTP against a live server on PostgreSQL, with a
real Celery worker settling: a completed trade, a cancellation and an expiry."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from conftest import wait_for
from escrow.models import Trade
from escrow.tasks import expire_overdue_trades
from ledger.tasks import seal_pending
from marketplace.tests.factories import fund

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


class Bot:
    def __init__(self, base: str, username: str) -> None:
        self.base = f"{base}/api/v1"
        self.http = requests.Session()
        token = self.http.post(
            f"{self.base}/auth/token/",
            json={"username": username, "password": "demo-pass-123"},
            timeout=10,
        )
        assert token.status_code == 200, token.text
        self.http.headers["Authorization"] = f"Token {token.json()['token']}"

    def get(self, path: str) -> dict:
        response = self.http.get(f"{self.base}{path}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: dict | None = None, expect: int = 200) -> dict:
        response = self.http.post(
            f"{self.base}{path}",
            json=body or {},
            headers={"Idempotency-Key": str(uuid.uuid4())},
            timeout=10,
        )
        assert response.status_code == expect, response.text
        return response.json()


@pytest.fixture
def bots(live_server, alice, bob):
    fund(alice, "BTC", "1")
    return Bot(live_server.url, "alice"), Bot(live_server.url, "bob")


def _offer(seller: Bot) -> dict:
    return seller.post(
        "/offers/",
        {
            "side": "sell",
            "asset": "BTC",
            "fiat": "EUR",
            "price_type": "fixed",
            "price": "80000",
            "amount": "0.1",
            "min_fiat": "100",
            "max_fiat": "4000",
            "payment_methods": ["sepa"],
            "payment_window_minutes": 15,
            "terms": "bot offer",
        },
        expect=201,
    )


def test_bots_complete_a_trade(celery_worker_process, bots):
    seller, buyer = bots
    offer = _offer(seller)
    book = buyer.get("/offers/?side=sell&asset=BTC&fiat=EUR")["results"]
    assert book[0]["id"] == offer["id"]
    trade = buyer.post(f"/offers/{offer['id']}/take/", {"fiat_amount": "800.00"}, expect=201)
    assert trade["state"] == "funded"
    assert seller.get("/wallets/")["results"][0]["escrow"] == "0.01001000"
    buyer.post(f"/trades/{trade['id']}/mark-paid/")
    seller_view = seller.get(f"/trades/{trade['id']}/")
    assert seller_view["state"] == "paid"
    assert "release" in seller_view["actions"]
    seller.post(f"/trades/{trade['id']}/release/", {"password": "demo-pass-123"})
    # the worker settles; the buyer bot polls until it sees the coins
    wait_for(lambda: buyer.get(f"/trades/{trade['id']}/")["state"] == "completed")
    wallets = {w["asset"]: w for w in buyer.get("/wallets/")["results"]}
    assert wallets["BTC"]["available"] == trade["buyer_receives"]
    seal_pending.delay()
    wait_for(lambda: all(t["seq"] for t in buyer.get("/transfers/")["results"]))
    call_command("verify_ledger", "--no-progress")


def test_bots_cancel_a_trade(celery_worker_process, bots):
    seller, buyer = bots
    offer = _offer(seller)
    trade = buyer.post(f"/offers/{offer['id']}/take/", {"amount": "0.02"}, expect=201)
    seller.post(f"/trades/{trade['id']}/cancel/", expect=403)
    cancelled = buyer.post(f"/trades/{trade['id']}/cancel/", {"reason": "changed my mind"})
    assert cancelled["state"] == "cancelled"
    assert seller.get("/wallets/")["results"][0]["available"] == "1.00000000"
    assert seller.get(f"/offers/{offer['id']}/")["available"] == "0.10000000"
    late = buyer.post(f"/trades/{trade['id']}/mark-paid/", expect=409)
    assert "cancelled" in late["error"]["message"]


def test_bots_see_a_trade_expire(celery_worker_process, bots):
    seller, buyer = bots
    offer = _offer(seller)
    trade = buyer.post(f"/offers/{offer['id']}/take/", {"amount": "0.02"}, expect=201)
    # the payment window runs out (moved back rather than waited for)
    Trade.objects.filter(pk=trade["id"]).update(
        payment_deadline=timezone.now() - timedelta(seconds=1)
    )
    expire_overdue_trades.delay()  # what beat sends every 15 s
    wait_for(lambda: buyer.get(f"/trades/{trade['id']}/")["state"] == "expired")
    buyer.post(f"/trades/{trade['id']}/mark-paid/", expect=409)
    assert seller.get("/wallets/")["results"][0]["available"] == "1.00000000"
