"""examples/bot.py against a live server: a maker bot and a taker bot trade through the public
API only (as subprocesses), and a real Celery worker settles the release."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, wait_for
from escrow.models import Trade
from marketplace.models import Offer
from marketplace.tests.factories import fund

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

BOT = ROOT / "examples" / "bot.py"
MAKER = [
    "--mode=maker",
    "--username=alice",
    "--password=demo-pass-123",
    "--asset=BTC",
    "--fiat=EUR",
    "--price=80000",
    "--amount=0.1",
    "--min-fiat=50",
    "--max-fiat=2000",
    "--payment-method=sepa",
]
TAKER = [
    "--mode=taker",
    "--username=bob",
    "--password=demo-pass-123",
    "--asset=BTC",
    "--fiat=EUR",
    "--fiat-amount=100",
]


def run_bot(live_server, args: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, str(BOT), f"--base-url={live_server.url}", "--once", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr  # logging's default stream


def _state(trade_id: int) -> str:
    return Trade.objects.values_list("state", flat=True).get(pk=trade_id)


def test_maker_and_taker_bots_trade(live_server, celery_worker_process, alice, bob):
    # given alice holds BTC
    fund(alice, "BTC", "1")
    # when the maker bot runs once: it posts a sell offer
    out = run_bot(live_server, MAKER)
    offer = Offer.objects.get(maker=alice)
    assert (offer.side, offer.price, offer.amount) == ("sell", 80000, offer.available)
    assert f"posted offer #{offer.pk}" in out
    # when the taker bot runs once: it matches that offer and marks the trade paid
    out = run_bot(live_server, TAKER)
    trade = Trade.objects.get()
    assert (trade.offer_id, trade.buyer, trade.state) == (offer.pk, bob, Trade.State.PAID)
    assert trade.fiat_amount == 100  # stored with room for 4 places (KWD has 3); shown as 100.00
    assert f"marked trade #{trade.pk} paid" in out
    # when the maker bot runs again: it reuses its offer and releases the paid trade
    out = run_bot(live_server, MAKER)
    assert f"reusing offer #{offer.pk}" in out
    assert f"released trade #{trade.pk}" in out
    assert Offer.objects.filter(maker=alice).count() == 1
    # then the worker settles it
    wait_for(lambda: _state(trade.pk) == Trade.State.COMPLETED)
    # and a third maker pass finds nothing left to release
    assert "0 trade(s) released" in run_bot(live_server, MAKER)


def test_taker_bot_without_a_match_exits_cleanly(live_server, bob):
    result = subprocess.run(
        [sys.executable, str(BOT), f"--base-url={live_server.url}", "--once", *TAKER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no trade" in result.stderr


def test_bad_password_is_reported(live_server, alice):
    result = subprocess.run(
        [
            sys.executable,
            str(BOT),
            f"--base-url={live_server.url}",
            "--once",
            *MAKER[:1],
            "--username=alice",
            "--password=wrong",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "invalid_credentials" in result.stderr
