"""The REST API in-process: errors, auth, scopes, idempotency, throttling, pagination."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.services import api_key_create
from escrow.models import Trade
from ledger.selectors import balance_available
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db


def client_for(user=None, key: str | None = None) -> APIClient:
    client = APIClient()
    if key is None and user is not None:
        key = Token.objects.get_or_create(user=user)[0].key
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def offer(alice):
    fund(alice, "BTC", "1")
    return make_offer(alice, price="80000", amount="0.5")


def test_token_from_username_and_password(alice):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "alice", "password": "demo-pass-123"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["token"] == Token.objects.get(user=alice).key
    bad = APIClient().post(
        "/api/v1/auth/token/", {"username": "alice", "password": "nope"}, format="json"
    )
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_credentials"


def test_unauthenticated_gets_401_json(refdata):
    response = APIClient().get("/api/v1/trades/")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "fields"}


def test_offer_book_shape_and_order(offer, bob, carol):
    fund(carol, "BTC", "1")
    cheaper = make_offer(carol, price="79000", amount="0.1")
    response = client_for(bob).get("/api/v1/offers/?side=sell&asset=BTC&fiat=EUR")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"results", "next"}
    assert [o["id"] for o in body["results"]] == [cheaper.pk, offer.pk]
    first = body["results"][0]
    assert first["effective_price"] == "79000.00"
    assert first["available"] == "0.10000000"
    assert first["maker"] == {
        "username": "carol",
        "trades": 0,
        "completion_rate": None,
        "online": False,
        "last_seen": None,
        "average_release_seconds": None,
    }
    assert first["payment_methods"] == ["sepa"]


def test_create_offer_and_bad_input(alice, refdata):
    fund(alice, "USDT", "1000")
    api = client_for(alice)
    payload = {
        "side": "sell",
        "asset": "USDT",
        "fiat": "EUR",
        "price_type": "floating",
        "margin_percent": "-0.5",
        "amount": "500",
        "min_fiat": "10",
        "max_fiat": "400",
        "payment_methods": ["sepa", "wise"],
    }
    created = api.post("/api/v1/offers/", payload, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["effective_price"] == "0.92"  # 0.92 * 0.995 = 0.9154 -> 0.92
    bad = api.post("/api/v1/offers/", {**payload, "amount": "0.0000001"}, format="json")
    assert bad.status_code == 400
    assert "amount" in bad.json()["error"]["fields"]
    float_amount = api.post("/api/v1/offers/", {**payload, "amount": 500}, format="json")
    assert float_amount.status_code == 400
    assert "decimal strings" in float_amount.json()["error"]["fields"]["amount"][0]


def test_full_trade_over_the_api(offer, alice, bob):
    seller, buyer = client_for(alice), client_for(bob)
    taken = buyer.post(f"/api/v1/offers/{offer.pk}/take/", {"fiat_amount": "800"}, format="json")
    assert taken.status_code == 201, taken.json()
    trade = taken.json()
    assert trade["state"] == "funded"
    assert trade["amount"] == "0.01000000"
    assert trade["actions"] == ["mark-paid", "cancel", "dispute"]
    assert buyer.post(f"/api/v1/trades/{trade['id']}/release/").status_code == 403
    paid = buyer.post(f"/api/v1/trades/{trade['id']}/mark-paid/")
    assert paid.json()["state"] == "paid"
    seen = seller.get(f"/api/v1/trades/{trade['id']}/").json()
    assert seen["actions"] == ["release"]  # a dispute opens only after the dispute delay
    fund_password = {"password": "demo-pass-123"}  # the seller's account password (no 2FA)
    released = seller.post(f"/api/v1/trades/{trade['id']}/release/", fund_password, format="json")
    assert released.status_code == 200
    assert released.json()["state"] in ("releasing", "completed")
    again = seller.post(f"/api/v1/trades/{trade['id']}/release/", fund_password, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"


def test_strangers_get_404(offer, bob, carol):
    trade = (
        client_for(bob)
        .post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, format="json")
        .json()
    )
    assert client_for(carol).get(f"/api/v1/trades/{trade['id']}/").status_code == 404
    for action in ("cancel", "mark-paid", "release", "dispute"):
        answer = client_for(carol).post(
            f"/api/v1/trades/{trade['id']}/{action}/", {}, format="json"
        )
        assert answer.status_code == 404, action
        assert answer.json()["error"]["code"] == "not_found", action
    assert client_for(bob).get(f"/api/v1/trades/{trade['id']}/").json()["state"] == "funded"


def test_idempotency_key_replays_the_first_response(offer, bob):
    api = client_for(bob)
    first = api.post(
        f"/api/v1/offers/{offer.pk}/take/",
        {"amount": "0.01"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="take-1",
    )
    second = api.post(
        f"/api/v1/offers/{offer.pk}/take/",
        {"amount": "0.01"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="take-1",
    )
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Trade.objects.count() == 1
    other = api.post(
        f"/api/v1/offers/{offer.pk}/take/",
        {"amount": "0.02"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="take-1",
    )
    assert other.status_code == 422
    assert Trade.objects.count() == 1


def test_scopes(offer, bob):
    _, read_only = api_key_create(user=bob, name="watcher", scopes=["read"])
    api = client_for(key=read_only)
    assert api.get("/api/v1/offers/").status_code == 200
    refused = api.post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, format="json")
    assert refused.status_code == 403
    assert "'trade' scope" in refused.json()["error"]["message"]
    _, trader = api_key_create(user=bob, name="bot", scopes=["read", "trade"])
    fund(bob, "BTC", "1")
    assert (
        client_for(key=trader)
        .post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, format="json")
        .status_code
        == 201
    )
    no_withdraw = client_for(key=trader).post(
        "/api/v1/wallets/BTC/withdrawals/",
        {"amount": "0.1", "address": "bc1qdestination"},
        format="json",
    )
    assert no_withdraw.status_code == 403
    assert balance_available(user=bob, asset_code="BTC") == Decimal("1")


def test_revoked_key_is_refused(bob, refdata):
    created = client_for(bob).post(
        "/api/v1/api-keys/",
        {"name": "bot", "scopes": ["read"], "password": "demo-pass-123"},
        format="json",
    )
    assert created.status_code == 201
    raw = created.json()["key"]
    assert raw.startswith("mk_")
    assert client_for(key=raw).get("/api/v1/wallets/").status_code == 200
    assert client_for(bob).delete(f"/api/v1/api-keys/{created.json()['id']}/").status_code == 204
    refused = client_for(key=raw).get("/api/v1/wallets/")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]


def test_throttling_gives_429_with_headers(bob, settings):
    settings.API_RATE_LIMITS = {**settings.API_RATE_LIMITS, "key": "3/min"}
    api = client_for(bob)
    responses = [api.get("/api/v1/wallets/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0]["X-RateLimit-Limit"] == "3"
    assert responses[0]["X-RateLimit-Remaining"] == "2"
    assert int(responses[3]["Retry-After"]) > 0
    assert responses[3].json()["error"]["code"] == "throttled"


def test_wallets_and_withdrawal(bob):
    fund(bob, "ETH", "1.5")
    api = client_for(bob)
    withdrawal = api.post(
        "/api/v1/wallets/eth/withdrawals/",
        {"amount": "0.5", "address": "0xabcdef0123456789", "password": "demo-pass-123"},
        format="json",
    )
    assert withdrawal.status_code == 201, withdrawal.json()
    wallets = {w["asset"]: w for w in api.get("/api/v1/wallets/").json()["results"]}
    assert wallets["ETH"]["available"] == "1.000000000000000000"
    assert wallets["ETH"]["pending_withdrawal"] == "0.500000000000000000"
    too_much = api.post(
        "/api/v1/wallets/ETH/withdrawals/",
        {"amount": "5", "address": "0xabcdef0123456789", "password": "demo-pass-123"},
        format="json",
    )
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "insufficient_funds"
    transfers = api.get("/api/v1/transfers/").json()
    assert {t["kind"] for t in transfers["results"]} == {"deposit", "withdrawal"}


def test_match(offer, bob):
    response = client_for(bob).post(
        "/api/v1/match/",
        {"side": "buy", "asset": "BTC", "fiat": "EUR", "fiat_amount": "400"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["offer"] == offer.pk
    none = client_for(bob).post(
        "/api/v1/match/",
        {"side": "sell", "asset": "BTC", "fiat": "EUR", "fiat_amount": "400"},
        format="json",
    )
    assert none.status_code == 404


def test_trade_list_paginates_with_a_cursor(offer, bob):
    api = client_for(bob)
    for _ in range(3):
        api.post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.001"}, format="json")
    page = api.get("/api/v1/trades/?limit=2").json()
    assert len(page["results"]) == 2
    rest = api.get(page["next"]).json()
    assert len(rest["results"]) == 1
    assert rest["next"] is None


def test_schema_is_valid(client):
    from openapi_spec_validator import validate

    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    validate(response.json())
    docs = client.get("/api/docs/")
    assert docs.status_code == 200


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_chat_with_attachments(offer, bob, alice, carol):
    from django.core.files.uploadedfile import SimpleUploadedFile

    trade = (
        client_for(bob)
        .post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, format="json")
        .json()
    )
    url = f"/api/v1/trades/{trade['id']}/messages/"
    sent = client_for(bob).post(url, {"text": "Paid by SEPA, ref T1"}, format="json")
    assert sent.status_code == 201, sent.json()
    proof = SimpleUploadedFile("proof.png", PNG, content_type="image/png")
    with_file = client_for(bob).post(url, {"text": "", "attachment": proof}, format="multipart")
    assert with_file.status_code == 201, with_file.json()
    assert with_file.json()["attachment_type"] == "image/png"
    # a file that claims to be a PNG but isn't one is refused, by its content
    fake = SimpleUploadedFile("evil.png", b"<script>alert(1)</script>", content_type="image/png")
    refused = client_for(bob).post(url, {"attachment": fake}, format="multipart")
    assert refused.status_code == 400
    assert "attachment" in refused.json()["error"]["fields"]
    listed = client_for(alice).get(url).json()["results"]
    assert [m["text"] for m in listed] == ["Paid by SEPA, ref T1", ""]
    attachment_url = listed[1]["attachment_url"]
    download = client_for(alice).get(attachment_url)
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == PNG
    # strangers see neither the chat nor the file
    assert client_for(carol).get(url).status_code == 404
    assert client_for(carol).get(attachment_url).status_code == 404
    assert client_for(carol).post(url, {"text": "hi"}, format="json").status_code == 404


def test_feedback_once_after_completion(offer, bob, alice):
    from escrow import services as escrow
    from escrow.models import Settlement

    trade = (
        client_for(bob)
        .post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, format="json")
        .json()
    )
    url = f"/api/v1/trades/{trade['id']}/feedback/"
    early = client_for(bob).post(url, {"rating": "positive"}, format="json")
    assert early.status_code == 409
    escrow.trade_mark_paid(trade_id=trade["id"], actor=bob)
    escrow.escrow_release(trade_id=trade["id"], actor=alice)
    escrow.settlement_execute(settlement_id=Settlement.objects.get(trade_id=trade["id"]).pk)
    given = client_for(bob).post(
        url, {"rating": "positive", "comment": "fast release"}, format="json"
    )
    assert given.status_code == 201
    assert given.json()["target"] == "alice"
    assert client_for(bob).post(url, {"rating": "negative"}, format="json").status_code == 409
    assert client_for(alice).post(url, {"rating": "meh"}, format="json").status_code == 400
