"""/api/v1/webhooks/ and /api/v1/notifications/ in-process."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.services import api_key_create
from marketplace.tests.factories import make_trade
from notifications import services, webhooks
from notifications.models import Notification, WebhookDelivery, WebhookEndpoint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trade_news_inline")]


def client_for(user=None, key: str | None = None) -> APIClient:
    client = APIClient()
    if key is None and user is not None:
        key = Token.objects.get_or_create(user=user)[0].key
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_register_list_and_delete_a_webhook(alice, bob):
    api = client_for(alice)
    # when alice registers an endpoint
    created = api.post(
        "/api/v1/webhooks/",
        {"url": "https://bot.example.com/hook", "events": ["trade.paid"]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="hook-1",
    )
    # then she sees its secret once
    assert created.status_code == 201, created.json()
    body = created.json()
    assert set(body) == {"id", "url", "events", "is_active", "created_at", "secret"}
    assert body["events"] == ["trade.paid"]
    assert body["secret"] == WebhookEndpoint.objects.get().secret
    # and a retried POST with the same key replays the answer instead of adding another, all
    # but the secret, which was shown once
    again = api.post(
        "/api/v1/webhooks/",
        {"url": "https://bot.example.com/hook", "events": ["trade.paid"]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="hook-1",
    )
    assert again.json() == {**body, "secret": None, "secret_shown_once": True}
    assert WebhookEndpoint.objects.count() == 1
    # and the list never shows the secret; bob's list is empty
    listed = api.get("/api/v1/webhooks/").json()
    assert [w["id"] for w in listed["results"]] == [body["id"]]
    assert "secret" not in listed["results"][0]
    assert "next" in listed
    assert client_for(bob).get("/api/v1/webhooks/").json()["results"] == []
    # when bob tries to delete it: 404; alice can
    assert client_for(bob).delete(f"/api/v1/webhooks/{body['id']}/").status_code == 404
    assert api.delete(f"/api/v1/webhooks/{body['id']}/").status_code == 204
    assert api.delete(f"/api/v1/webhooks/{body['id']}/").status_code == 404
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"url": "ftp://bot.example.com/hook"}, "url"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://bot.example.com/" + "a" * 480}, "url"),
        ({}, "url"),
        ({"url": "https://bot.example.com/", "events": ["trade.exploded"]}, "events"),
        ({"url": "https://bot.example.com/", "events": "trade.paid"}, "events"),
    ],
)
def test_bad_webhook_input_names_the_field(alice, payload, field):
    response = client_for(alice).post("/api/v1/webhooks/", payload, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == [field]
    assert error["message"].startswith(f"{field}:")
    assert not WebhookEndpoint.objects.exists()


def test_webhook_limit_per_account(alice):
    api = client_for(alice)
    for n in range(webhooks.MAX_ENDPOINTS_PER_USER):
        assert (
            api.post(
                "/api/v1/webhooks/", {"url": f"https://bot.example.com/{n}"}, format="json"
            ).status_code
            == 201
        )
    over = api.post("/api/v1/webhooks/", {"url": "https://bot.example.com/x"}, format="json")
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "too_many_webhooks"


def test_read_only_api_key_cannot_register_webhooks(alice):
    _, raw = api_key_create(user=alice, name="reader", scopes=["read"])
    api = client_for(key=raw)
    assert api.get("/api/v1/webhooks/").status_code == 200
    denied = api.post("/api/v1/webhooks/", {"url": "https://bot.example.com/"}, format="json")
    assert denied.status_code == 403


def test_delivery_log_is_the_owners_only(alice, bob):
    # given a delivery queued for alice's endpoint
    endpoint, _ = services.webhook_create(user=alice, url="https://bot.example.com/hook")
    trade = make_trade(alice, bob)
    services.notify_trade_event(trade=trade, event=trade.events.get())
    delivery = WebhookDelivery.objects.get()
    # then alice sees it in the endpoint's log
    log = client_for(alice).get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/")
    assert log.status_code == 200
    (row,) = log.json()["results"]
    assert row == {
        "id": delivery.pk,
        "event": "trade.created",
        "status": "pending",
        "attempts": 0,
        "last_status_code": None,
        "last_error": "",
        "next_attempt_at": row["next_attempt_at"],
        "created_at": row["created_at"],
        "delivered_at": None,
    }
    # and bob (the other party) gets 404 for alice's endpoint
    assert client_for(bob).get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/").status_code == 404


def test_notifications_list_unread_and_mark_read(alice, bob, django_capture_on_commit_callbacks):
    # given two trades taken on alice's offers
    with django_capture_on_commit_callbacks(execute=True):
        first = make_trade(alice, bob)
        second = make_trade(alice, bob)
    api = client_for(alice)
    # then alice's list has both, newest first, both unread
    listed = api.get("/api/v1/notifications/").json()
    assert listed["unread"] == 2
    assert [n["trade"] for n in listed["results"]] == [second.pk, first.pk]
    assert set(listed["results"][0]) == {"id", "kind", "trade", "text", "created_at", "read_at"}
    assert listed["results"][0]["kind"] == "created"
    # when she reads one
    note_id = listed["results"][1]["id"]
    read = api.post(f"/api/v1/notifications/{note_id}/read/", HTTP_IDEMPOTENCY_KEY="r1")
    assert read.status_code == 200
    assert read.json()["read_at"] is not None
    # then one is left unread, and the unread filter shows just that one
    assert api.get("/api/v1/notifications/").json()["unread"] == 1
    unread = api.get("/api/v1/notifications/?unread=true").json()
    assert [n["trade"] for n in unread["results"]] == [second.pk]
    # and bob can neither see nor read alice's notifications
    assert client_for(bob).get("/api/v1/notifications/").json() == {
        "next": None,
        "previous": None,
        "results": [],
        "unread": 0,
    }
    assert client_for(bob).post(f"/api/v1/notifications/{note_id}/read/").status_code == 404
    assert Notification.objects.filter(read_at__isnull=False).count() == 1


def test_notifications_paginate(alice, bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):
            make_trade(alice, bob)
    api = client_for(alice)
    page = api.get("/api/v1/notifications/?limit=2").json()
    assert len(page["results"]) == 2
    assert page["unread"] == 3
    rest = api.get(page["next"]).json()
    assert len(rest["results"]) == 1
    assert rest["next"] is None


def test_anonymous_gets_401(refdata):
    assert APIClient().get("/api/v1/notifications/").status_code == 401
    assert APIClient().get("/api/v1/webhooks/").status_code == 401
