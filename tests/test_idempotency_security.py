"""Security of the Idempotency-Key (finding 3) and of credential management by scoped keys
(finding 15): a replay is checked against the replaying credential's scopes, stored answers hold
no secret, records expire, and only the account's full credential manages keys and webhooks."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import api_key_create
from common.models import IdempotencyRecord
from escrow.models import Trade
from marketplace.tests.factories import fund, make_offer
from notifications.models import WebhookEndpoint
from notifications.services import webhook_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def offer(alice):
    fund(alice, "BTC", "1")
    return make_offer(alice, price="80000", amount="0.5")


def client_for(user=None, key: str | None = None) -> APIClient:
    client = APIClient()
    if key is None and user is not None:
        key = Token.objects.get_or_create(user=user)[0].key
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# --- finding 3: replays are checked against the credential's scopes ----------------------------


def test_a_trade_key_cannot_replay_the_creation_of_a_withdraw_key(bob):
    # given: the account token created a withdraw key with Idempotency-Key K
    body = {"name": "payout bot", "scopes": ["read", "withdraw"], "password": "demo-pass-123"}
    first = client_for(bob).post("/api/v1/api-keys/", body, format="json", HTTP_IDEMPOTENCY_KEY="K")
    assert first.status_code == 201, first.json()
    _, trade_key = api_key_create(user=bob, name="trader", scopes=["read", "trade"])

    # when: a trade-scoped key replays the same key and body
    replay = client_for(key=trade_key).post(
        "/api/v1/api-keys/", body, format="json", HTTP_IDEMPOTENCY_KEY="K"
    )

    # then: refused, and no raw key comes back
    assert replay.status_code == 403
    assert first.json()["key"] not in replay.content.decode()
    assert "Idempotent-Replayed" not in replay


def test_a_replay_needs_every_scope_of_the_first_request(offer, bob):
    # given: the account token (every scope) took an offer with Idempotency-Key K
    path = f"/api/v1/offers/{offer.pk}/take/"
    first = client_for(bob).post(path, {"amount": "0.01"}, format="json", HTTP_IDEMPOTENCY_KEY="K")
    assert first.status_code == 201, first.json()
    _, trade_key = api_key_create(user=bob, name="trader", scopes=["read", "trade"])
    _, full_key = api_key_create(user=bob, name="all", scopes=["read", "trade", "withdraw"])

    # when: a key without `withdraw` replays it, then one with every scope
    narrower = client_for(key=trade_key).post(
        path, {"amount": "0.01"}, format="json", HTTP_IDEMPOTENCY_KEY="K"
    )
    same = client_for(key=full_key).post(
        path, {"amount": "0.01"}, format="json", HTTP_IDEMPOTENCY_KEY="K"
    )

    # then: the narrower credential is refused and nothing is replayed to it; the other replays
    assert narrower.status_code == 403
    assert narrower.json()["error"]["code"] == "idempotency_scope"
    assert "Idempotent-Replayed" not in narrower
    assert same.status_code == 201
    assert same["Idempotent-Replayed"] == "true"
    assert same.json() == first.json()
    assert Trade.objects.count() == 1


def test_the_record_keeps_the_scopes_of_the_first_credential(offer, bob):
    # given: a trade key
    _, trade_key = api_key_create(user=bob, name="trader", scopes=["read", "trade"])

    # when: it takes an offer with an Idempotency-Key
    client_for(key=trade_key).post(
        f"/api/v1/offers/{offer.pk}/take/",
        {"amount": "0.01"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="K",
    )

    # then: the record holds its scopes
    assert sorted(IdempotencyRecord.objects.get().scopes) == ["read", "trade"]


# --- finding 3: stored answers hold no secret ---------------------------------------------------


def test_an_api_key_is_shown_once_and_never_stored_for_replay(bob):
    # given: the account token created a key with Idempotency-Key K
    api = client_for(bob)
    body = {"name": "bot", "scopes": ["read", "trade"], "password": "demo-pass-123"}
    first = api.post("/api/v1/api-keys/", body, format="json", HTTP_IDEMPOTENCY_KEY="K")
    raw = first.json()["key"]
    assert raw.startswith("mk_")

    # when: the same credential replays it
    replay = api.post("/api/v1/api-keys/", body, format="json", HTTP_IDEMPOTENCY_KEY="K")

    # then: the replay says the key was shown once; the record never held it
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["key"] is None
    assert replay.json()["secret_shown_once"] is True
    assert replay.json()["id"] == first.json()["id"]
    assert raw not in json.dumps(IdempotencyRecord.objects.get().response_body)
    assert ApiKey.objects.filter(user=bob).count() == 1


def test_a_webhook_secret_is_never_stored_for_replay(alice):
    # given: a webhook created with Idempotency-Key K
    api = client_for(alice)
    body = {"url": "https://bot.example.com/hook"}
    first = api.post("/api/v1/webhooks/", body, format="json", HTTP_IDEMPOTENCY_KEY="K")
    assert first.status_code == 201, first.json()
    secret = first.json()["secret"]

    # when: it is replayed
    replay = api.post("/api/v1/webhooks/", body, format="json", HTTP_IDEMPOTENCY_KEY="K")

    # then: no secret in the replay or the record
    assert replay.json()["secret"] is None
    assert replay.json()["secret_shown_once"] is True
    assert secret not in json.dumps(IdempotencyRecord.objects.get().response_body)
    assert WebhookEndpoint.objects.filter(user=alice).count() == 1


# --- finding 3: records expire ------------------------------------------------------------------


def test_an_expired_record_is_ignored(offer, bob):
    # given: a record older than the TTL
    path = f"/api/v1/offers/{offer.pk}/take/"
    api = client_for(bob)
    api.post(path, {"amount": "0.01"}, format="json", HTTP_IDEMPOTENCY_KEY="K")
    old = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS, minutes=1)
    IdempotencyRecord.objects.update(created_at=old)

    # when: the key is sent again
    again = api.post(path, {"amount": "0.01"}, format="json", HTTP_IDEMPOTENCY_KEY="K")

    # then: it is a new request, not a replay
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again
    assert Trade.objects.count() == 2
    assert IdempotencyRecord.objects.get().created_at > old


def test_prune_deletes_expired_records_in_batches(bob, alice):
    from common.services import idempotency_records_prune
    from common.tasks import idempotency_records_prune as prune_task

    # given: five expired records and one fresh one
    old = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS + 1)
    for i in range(5):
        IdempotencyRecord.objects.create(user=bob, key=f"old-{i}", fingerprint="x")
    IdempotencyRecord.objects.update(created_at=old)
    IdempotencyRecord.objects.create(user=alice, key="fresh", fingerprint="x")

    # when: pruned two at a time, then by the beat task
    deleted = idempotency_records_prune(batch_size=2)
    prune_task.run()

    # then: only the fresh one is left
    assert deleted == 5
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["fresh"]


def test_prune_runs_hourly_from_beat():
    # given / when: the beat schedule
    entry = settings.CELERY_BEAT_SCHEDULE["common-prune-idempotency-records"]

    # then
    assert entry["task"] == "common.tasks.idempotency_records_prune"
    assert entry["schedule"] == 3600.0
    assert settings.IDEMPOTENCY_TTL_HOURS == 24


# --- finding 15: scoped keys do not manage credentials ------------------------------------------


def test_a_scoped_key_cannot_manage_keys_or_webhooks(bob):
    # given: the account's other key, a webhook, and a trade-scoped key
    other, _ = api_key_create(user=bob, name="other", scopes=["read", "withdraw"])
    endpoint, _ = webhook_create(user=bob, url="https://bot.example.com/hook")
    _, trade_key = api_key_create(user=bob, name="trader", scopes=["read", "trade"])
    api = client_for(key=trade_key)

    # when: it tries to revoke, create, register and delete
    revoke = api.delete(f"/api/v1/api-keys/{other.pk}/")
    create = api.post("/api/v1/api-keys/", {"name": "x", "scopes": ["read"]}, format="json")
    hook = api.post("/api/v1/webhooks/", {"url": "https://x.example.com/h"}, format="json")
    unhook = api.delete(f"/api/v1/webhooks/{endpoint.pk}/")

    # then: each is refused with 403 and a clear message; nothing changed
    for response in (revoke, create, hook, unhook):
        assert response.status_code == 403, response.json()
        assert response.json()["error"]["code"] == "account_credential_required"
        assert "account token" in response.json()["error"]["message"]
    other.refresh_from_db()
    assert other.revoked_at is None
    assert WebhookEndpoint.objects.filter(user=bob).count() == 1
    assert ApiKey.objects.filter(user=bob).count() == 2


def test_a_read_key_lists_keys_and_webhooks_and_the_token_manages_them(bob):
    # given: a read key and the account token
    other, _ = api_key_create(user=bob, name="other", scopes=["read"])
    _, read_key = api_key_create(user=bob, name="watcher", scopes=["read"])

    # when / then: the read key lists; the token revokes
    assert client_for(key=read_key).get("/api/v1/api-keys/").status_code == 200
    assert client_for(key=read_key).get("/api/v1/webhooks/").status_code == 200
    assert client_for(bob).delete(f"/api/v1/api-keys/{other.pk}/").status_code == 204


def test_the_fingerprint_leaves_passwords_and_codes_out():
    # given requests that differ only in the fund password or the 2FA code
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from common.idempotency import _fingerprint

    factory = APIRequestFactory()

    def fingerprint(body: dict, fmt: str = "json") -> str:
        return _fingerprint(Request(factory.post("/api/v1/trades/1/release/", body, format=fmt)))

    # when they are fingerprinted, then the secret fields make no difference (a stored, fast hash
    # of a password could be guessed offline), in JSON and in forms alike
    assert fingerprint({"password": "hunter2", "reason": "ok"}) == fingerprint(
        {"reason": "ok", "password": "other-one"}
    )
    assert fingerprint({"otp": "123456"}) == fingerprint({})
    assert fingerprint({"password": "a", "x": "1"}, "multipart") != fingerprint({"x": "2"}, "json")
    # but every other field still does
    assert fingerprint({"password": "hunter2", "reason": "ok"}) != fingerprint(
        {"password": "hunter2", "reason": "changed"}
    )
