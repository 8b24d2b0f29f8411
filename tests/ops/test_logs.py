"""JSON logs: a full trade's lines carry the request, user and trade ids, and no secret
(password, API token, API key, TOTP secret, IBAN) appears in them, whatever the level."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from django.conf import settings
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.services import api_key_create
from accounts.tests.test_two_factor import enable
from escrow import services as escrow
from escrow.models import Trade
from marketplace.tests.factories import fund, make_offer
from operations.logs import MASK, redact_text

pytestmark = pytest.mark.django_db

IBAN = "DE89 3704 0044 0532 0130 00"
PASSWORD = "demo-pass-123"


@pytest.fixture
def captured() -> io.StringIO:
    """The settings' own handler (filters and JSON formatter), at DEBUG, into a buffer."""
    stream = io.StringIO()
    config = json.loads(json.dumps(settings.LOGGING, default=str))
    config["root"]["level"] = "DEBUG"
    # factory_boy's own debug lines describe the test's fixtures (a user built with its
    # password), not anything the platform logs.
    config["loggers"] = {"factory": {"level": "WARNING"}}
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    config["handlers"]["console"]["stream"] = "ext://sys.stdout"
    logging.config.dictConfig(config)
    root.handlers[0].setStream(stream)
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]


def test_a_full_trade_logs_no_secret(captured, alice, bob):
    # given a buyer with 2FA, a seller with an API key and an offer whose terms carry her IBAN
    device = enable(bob)
    secret = TOTPDevice.objects.get(pk=device.pk).key
    _, api_key = api_key_create(user=alice, name="bot", scopes=["read", "trade"])
    fund(alice, "BTC", "1")
    offer = make_offer(alice, price="80000", amount="0.5", terms=f"SEPA to {IBAN} only")
    # when the buyer logs in with a password for a token, and both trade over the API
    token = (
        Client()
        .post(
            "/api/v1/auth/token/",
            {"username": "bob", "password": PASSWORD},
            content_type="application/json",
        )
        .json()["token"]
    )
    buyer = Client(HTTP_AUTHORIZATION=f"Token {token}")
    seller = Client(HTTP_AUTHORIZATION=f"Token {api_key}")
    trade = buyer.post(
        f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, content_type="application/json"
    )
    assert trade.status_code == 201, trade.content
    trade_id = trade.json()["id"]
    message = buyer.post(
        f"/api/v1/trades/{trade_id}/messages/",
        {"text": f"sent from {IBAN}, ref {trade_id}"},
        content_type="application/json",
    )
    assert message.status_code == 201
    assert buyer.post(f"/api/v1/trades/{trade_id}/mark-paid/").status_code == 200
    # a client that puts its credentials in a query string, and a wrong password
    assert Client().get(f"/api/v1/trades/?token={token}&api_key={api_key}").status_code == 401
    assert (
        Client()
        .post(
            "/api/v1/auth/token/",
            {"username": "bob", "password": PASSWORD + "x"},
            content_type="application/json",
        )
        .status_code
        == 401
    )
    released = seller.post(
        f"/api/v1/trades/{trade_id}/release/",
        {"password": PASSWORD},
        content_type="application/json",
    )
    assert released.status_code == 200, released.content
    escrow.settlements_execute_pending()
    assert Trade.objects.get(pk=trade_id).state == Trade.State.COMPLETED
    # then the lines are JSON with the ids
    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) >= 7
    requests = [line for line in lines if line["logger"] == "operations.request"]
    assert all(len(line["request_id"]) == 32 for line in requests)
    release = next(line for line in requests if line["path"].endswith("/release/"))
    assert release["user_id"] == alice.pk  # known once DRF authenticated the API key
    assert release["trade_id"] == trade_id
    assert any(line["status"] == 401 for line in requests)
    # and no secret appears, in any spelling
    compact_iban = IBAN.replace(" ", "")
    for secret_value in (PASSWORD, token, api_key, secret, IBAN, compact_iban):
        assert secret_value not in text, secret_value
        assert secret_value not in text.replace(" ", "")


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("GET /api/v1/trades/?token=abcdef123456&page=2", "page=2"),
        ("Authorization: Token 0123456789abcdef0123456789abcdef01234567", "Authorization:"),
        ("pay to DE89 3704 0044 0532 0130 00 today", "today"),
        ("pay to DE89370400440532013000 today", "pay to"),
        ("{'password': 'hunter2hunter2', 'username': 'bob'}", "'username': 'bob'"),
        ("otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=x", "issuer=x"),
        ("key mk_8f7e6d5c4b3a29180f7e6d5c4b3a2918 revoked", "revoked"),
    ],
)
def test_redaction_masks_secret_shapes_and_keeps_the_rest(line, kept):
    redacted = redact_text(line)
    assert MASK in redacted
    assert kept in redacted
    for word in ("abcdef123456", "0123456789abcdef", "3704", "hunter2", "JBSWY3DP", "8f7e6d5c"):
        assert word not in redacted
