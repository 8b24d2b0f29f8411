"""/healthz, /readyz and /metrics in-process: readiness checks with their figures, the
checkpoint-lag rule, and the token that guards the metrics."""

from __future__ import annotations

import re
import types
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from escrow import services as escrow
from escrow.models import Trade
from ledger import services as ledger
from ledger.models import Checkpoint
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db

METRICS_TOKEN = "m" * 16 + "-metrics-token-for-tests-only"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name}{labels} not in the metrics"
    return float(found.group(1))


def test_healthz_answers_before_host_checks_and_the_https_redirect(settings):
    # given production's redirect and a host list the probe's address is not in
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["market.example.com"]
    # when the orchestrator probes the container by address over plain http
    response = Client().get("/healthz", HTTP_HOST="10.0.0.7:8000")
    # then it gets an answer, not a redirect or a 400
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_each_check(refdata):
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "redis", "checkpoint_lag"}
    assert all(check["ok"] for check in body["checks"].values())


def _clock_ahead(monkeypatch, seconds: float) -> None:
    """The probe's clock runs `seconds` ahead (the ledger's rows are append-only: no aging them)."""
    later = timezone.now() + timedelta(seconds=seconds)
    monkeypatch.setattr("operations.selectors.timezone", types.SimpleNamespace(now=lambda: later))


def _sealed_entries(alice, n: int = 2) -> None:
    for _ in range(n):
        fund(alice, "BTC", "1")
    ledger.ledger_seal_pending()


def test_readyz_is_not_ready_when_sealed_entries_wait_too_long_for_a_checkpoint(
    settings, alice, monkeypatch
):
    # given sealed entries that no checkpoint covers (no checkpoint by count here)
    settings.LEDGER_CHECKPOINT_EVERY = 0
    settings.LEDGER_CHECKPOINT_INTERVAL = 60
    _sealed_entries(alice)
    assert not Checkpoint.objects.exists()
    # when they have waited 3 intervals, they are still fine; a little over, not
    _clock_ahead(monkeypatch, 170)
    assert Client().get("/readyz").status_code == 200
    _clock_ahead(monkeypatch, 181)
    response = Client().get("/readyz")
    # then the platform is not ready, and says why
    assert response.status_code == 503
    lag = response.json()["checks"]["checkpoint_lag"]
    assert lag["ok"] is False
    assert lag["uncovered_seconds"] > 180
    assert lag["limit_seconds"] == 180
    # and once a checkpoint covers them it is ready again
    monkeypatch.undo()
    ledger.checkpoint_create()
    _clock_ahead(monkeypatch, 181)
    assert Client().get("/readyz").status_code == 200


def test_a_quiet_ledger_with_an_old_checkpoint_is_ready(settings, alice, monkeypatch):
    settings.LEDGER_CHECKPOINT_EVERY = 0
    settings.LEDGER_CHECKPOINT_INTERVAL = 60
    _sealed_entries(alice)
    ledger.checkpoint_create()
    # everything is covered, and both the entries and the checkpoint are a day old
    _clock_ahead(monkeypatch, 86400)
    assert Client().get("/readyz").status_code == 200


def test_metrics_refuse_without_their_token(settings, refdata):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404  # off until a token is configured
    settings.METRICS_TOKEN = METRICS_TOKEN
    missing = Client().get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer " + "x" * len(METRICS_TOKEN))
    assert wrong.status_code == 401
    assert b"p2p_" not in missing.content + wrong.content


def test_metrics_show_the_settlement_lag_after_a_trade(settings, alice, bob):
    settings.METRICS_TOKEN = METRICS_TOKEN
    # given a trade over the API, released by the seller and settled by the worker's service
    fund(alice, "BTC", "1")
    offer = make_offer(alice, price="80000", amount="0.5")
    buyer = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=bob).key}")
    seller = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    trade = buyer.post(
        f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, content_type="application/json"
    ).json()
    assert buyer.post(f"/api/v1/trades/{trade['id']}/mark-paid/").status_code == 200
    released = seller.post(
        f"/api/v1/trades/{trade['id']}/release/",
        {"password": "demo-pass-123"},
        content_type="application/json",
    )
    assert released.status_code == 200
    scrape = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    text = scrape.content.decode()
    # while it waits, the oldest pending settlement has an age
    assert metric(text, "p2p_settlements_pending") == 1
    assert metric(text, "p2p_settlement_lag_seconds") >= 0
    assert metric(text, "p2p_trades", state="releasing") == 1
    # when it is settled
    escrow.settlements_execute_pending()
    assert Trade.objects.get(pk=trade["id"]).state == Trade.State.COMPLETED
    scrape = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    # then
    assert scrape.status_code == 200
    assert scrape["Content-Type"].startswith("text/plain")
    text = scrape.content.decode()
    assert metric(text, "p2p_trades", state="completed") == 1
    assert metric(text, "p2p_trades", state="releasing") == 0
    assert metric(text, "p2p_settlements_pending") == 0
    assert metric(text, "p2p_settlement_lag_seconds") == 0
    assert metric(text, "p2p_settlements_done") == 1
    assert metric(text, "p2p_settlement_last_lag_seconds") > 0
    assert metric(text, "p2p_settlements_failed") == 0
    assert metric(text, "p2p_ledger_seal_lag_seconds") > 0  # nothing sealed it yet
    for name in (
        "p2p_ledger_checkpoint_age_seconds",
        "p2p_withdrawals_queued",
        "p2p_webhook_deliveries_failed",
        "p2p_celery_queue_length",
    ):
        metric(text, name)
    # and the requests are counted by view and status
    released = metric(
        text,
        "p2p_http_requests_total",
        view="api-trade-release",
        method="POST",
        status="200",
    )
    assert released >= 1
