"""Webhooks end to end: the API, the escrow listeners, a real Celery worker process over Redis,
and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import wait_for
from escrow import services as escrow
from marketplace.tests.factories import fund, make_offer, make_trade
from notifications import services, webhooks
from notifications.models import WebhookDelivery

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _statuses() -> list[str]:
    return list(WebhookDelivery.objects.order_by("pk").values_list("status", flat=True))


def test_bot_receives_signed_trade_events(celery_worker_process, alice, bob, receiver):
    # given a bot (alice) with a sell offer that registers a webhook over the API
    fund(alice, "BTC", "1")
    offer = make_offer(alice)
    bot = client_for(alice)
    registered = bot.post(
        "/api/v1/webhooks/",
        {"url": receiver.url, "events": ["trade.created", "trade.paid"]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="register-1",
    )
    assert registered.status_code == 201, registered.json()
    secret = registered.json()["secret"]
    # when bob takes the offer and marks the trade paid
    taker = client_for(bob)
    taken = taker.post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, format="json")
    assert taken.status_code == 201, taken.json()
    trade_id = taken.json()["id"]
    assert taker.post(f"/api/v1/trades/{trade_id}/mark-paid/").status_code == 200
    # then the worker POSTs both events to the bot, each signed with its secret
    wait_for(lambda: len(receiver.received) >= 2)
    wait_for(lambda: _statuses() == ["delivered", "delivered"])
    assert sorted(receiver.events()) == ["trade.created", "trade.paid"]
    for got in receiver.received:
        assert got.signature_ok(secret)
        assert got.json["trade"]["id"] == trade_id
        assert got.json["event"] == got.headers["x-event"]
        assert str(got.json["delivery_id"]) == got.headers["x-delivery-id"]
    paid = next(r.json for r in receiver.received if r.json["event"] == "trade.paid")
    assert paid["trade"]["state"] == "paid"
    assert (paid["trade"]["buyer"], paid["trade"]["seller"]) == ("bob", "alice")
    # and the bot's delivery log over the API says so
    log = bot.get(f"/api/v1/webhooks/{registered.json()['id']}/deliveries/").json()["results"]
    assert {(d["event"], d["status"], d["attempts"]) for d in log} == {
        ("trade.created", "delivered", 1),
        ("trade.paid", "delivered", 1),
    }


def test_failing_receiver_gets_the_delivery_retried(celery_worker_process, alice, bob, receiver):
    # given a receiver that answers 500 once, then 200
    receiver.answer(500)
    _, secret = services.webhook_create(user=alice, url=receiver.url, events=["trade.created"])
    # when a trade is opened on alice's offer
    make_trade(alice, bob)
    # then the worker retries after the backoff and the second attempt is delivered
    wait_for(lambda: _statuses() == ["delivered"])
    delivery = WebhookDelivery.objects.get()
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (2, 200, "")
    assert [r.headers["x-delivery-id"] for r in receiver.received] == [str(delivery.pk)] * 2
    assert all(r.signature_ok(secret) for r in receiver.received)
    # at least the first backoff (base * 2^1 s) passed between the attempts
    assert delivery.delivered_at - delivery.created_at >= timedelta(
        seconds=services.backoff_delay(1).total_seconds() - 1
    )


def test_sweeper_requeues_a_lost_delivery(
    celery_worker_process, alice, bob, receiver, monkeypatch, trade_news_inline
):
    # given a delivery whose broker message was lost (the move's news written in this process,
    # by its task's own code, where the delivery's message is dropped)
    monkeypatch.setattr(webhooks, "_enqueue", lambda delivery_id: None)
    services.webhook_create(user=alice, url=receiver.url)
    trade = make_trade(alice, bob)
    monkeypatch.undo()
    assert _statuses() == ["pending"]
    # when it is overdue and the sweeper runs
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert services.webhook_deliveries_requeue_due() == 1
    # then the worker delivers it, once
    wait_for(lambda: _statuses() == ["delivered"])
    assert services.webhook_deliveries_requeue_due() == 0
    assert [r.json["trade"]["id"] for r in receiver.received] == [trade.pk]
    # and later events of the same trade flow as usual
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    wait_for(lambda: _statuses() == ["delivered", "delivered"])
    assert receiver.events() == ["trade.created", "trade.paid"]
