"""examples/bot.py following /ws/v1/stream/ (a real uvicorn process): the maker bot releases a
trade as soon as the stream says it was marked paid, with no polling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, wait_for
from escrow import services as escrow
from escrow.models import Trade
from marketplace.models import Offer
from marketplace.tests.factories import fund
from tests.live_ws import WsServer, free_port

pytestmark = pytest.mark.django_db(transaction=True)

BOT = ROOT / "examples" / "bot.py"


def test_the_maker_bot_releases_when_the_stream_says_paid(live_server, alice, bob, tmp_path: Path):
    fund(alice, "BTC", "1")
    ws = WsServer(free_port())
    ws.start()
    log = tmp_path / "maker.log"
    try:
        with log.open("w") as out:
            bot = subprocess.Popen(
                [sys.executable, str(BOT), f"--base-url={live_server.url}", "--once",
                 "--mode=maker", "--username=alice", "--password=demo-pass-123", "--asset=BTC",
                 "--fiat=EUR", "--price=80000", "--amount=0.1", "--min-fiat=50",
                 "--max-fiat=2000", "--payment-method=sepa",
                 f"--stream-url=ws://127.0.0.1:{ws.port}/ws/v1/stream/"],
                stderr=out,
            )  # fmt: skip
            # the bot posted its offer and is following its stream
            wait_for(lambda: "following" in log.read_text(), timeout=60)
            offer = Offer.objects.get(maker=alice)
            # when bob takes it and marks it paid
            trade = escrow.trade_open(offer_id=offer.pk, taker=bob, amount="0.001")
            escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
            # then the bot, told by the stream, releases it and exits (--once)
            assert bot.wait(timeout=60) == 0, log.read_text()
    finally:
        ws.stop()
    text = log.read_text()
    assert f"trade #{trade.pk} marked paid" in text
    assert f"released trade #{trade.pk}" in text
    state = Trade.objects.values_list("state", flat=True).get(pk=trade.pk)
    assert state in (Trade.State.RELEASING, Trade.State.COMPLETED)
