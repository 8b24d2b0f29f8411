"""Telegram against a local HTTP server on 127.0.0.1 that speaks the Bot API (`getUpdates`,
`sendMessage`, `{"ok": true, "result": ...}`): linking with a one-time code, refused codes,
the important events as sendMessage calls, and a failing Bot API retried.

The poll and the sends run in this process through the services the worker's tasks call
(`poll_telegram` → telegram_updates_poll; `send_outbound` → outbound_deliver, through the
`outbound_inline` fixture); test_email_delivery.py has the real worker and its retries."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from escrow import services as escrow
from lending import services as lending
from marketplace.services import price_index_set
from marketplace.tests.factories import make_trade
from notifications import outbound, preferences, telegram
from notifications.models import OutboundMessage, TelegramLink
from notifications.tests.test_loans import _usdt_loan
from notifications.tests.test_loans import queued as queued  # a fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trade_news_inline")]

TOKEN = "123456:TEST-token"


class BotApi:
    """The Bot API's two methods: getUpdates answers the queued updates from `offset` on (as
    Telegram does: older ones are forgotten once confirmed); sendMessage records the call and
    answers the next queued failure, if any."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                found = re.fullmatch(r"/bot(?P<token>[^/]+)/(?P<method>\w+)", self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if found is None or found["token"] != TOKEN:
                    return self._answer(401, {"ok": False, "error_code": 401})
                status, answer = api.handle(found["method"], body)
                self._answer(status, answer)

            def _answer(self, status: int, answer: dict[str, Any]) -> None:
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, method: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((method, body))
            if method == "getUpdates":
                offset = body.get("offset", 0)
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                return 200, {"ok": True, "result": list(self.updates)}
            if method == "sendMessage":
                if self.failures:
                    return self.failures.pop(0)
                return 200, {"ok": True, "result": {"message_id": len(self.calls)}}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    def say(self, chat_id: int, text: str, *, chat_type: str = "private") -> None:
        """A person writes to the bot."""
        with self.lock:
            update_id = 1000 + len(self.updates) + len(self.calls)
            self.updates.append(
                {
                    "update_id": update_id,
                    "message": {
                        "message_id": update_id,
                        "date": 0,
                        "chat": {"id": chat_id, "type": chat_type},
                        "from": {"id": chat_id, "is_bot": False, "first_name": "T"},
                        "text": text,
                    },
                }
            )

    def sent(self) -> list[tuple[int, str]]:
        with self.lock:
            return [(b["chat_id"], b["text"]) for m, b in self.calls if m == "sendMessage"]

    def offsets(self) -> list[int]:
        with self.lock:
            return [b["offset"] for m, b in self.calls if m == "getUpdates"]


@pytest.fixture
def bot(settings) -> Iterator[BotApi]:
    api = BotApi()
    settings.TELEGRAM_BOT_TOKEN = TOKEN
    settings.TELEGRAM_API_URL = api.url
    settings.TELEGRAM_BOT_NAME = "TestEscrowBot"
    yield api
    api.server.shutdown()
    api.server.server_close()


def _poll(capture) -> int:
    with capture(execute=True):
        return telegram.telegram_updates_poll()


def _link(bot: BotApi, user: Any, chat_id: int, capture) -> None:
    code, _ = telegram.telegram_link_code_create(user=user)
    bot.say(chat_id, f"/start {code}")
    _poll(capture)


def test_linking_with_a_good_code_from_the_settings_page(
    client, alice, bot, django_capture_on_commit_callbacks, outbound_inline
):
    # given alice on her settings page, which offers to link Telegram
    client.force_login(alice)
    page = client.get(reverse("settings")).content.decode()
    assert "Link Telegram" in page
    # when she asks for a code
    shown = client.post(reverse("telegram_link"))
    assert shown.status_code == 200
    assert shown["Cache-Control"] == "no-store"
    html = shown.content.decode()
    code = re.search(r"/start ([A-Z0-9]{10})<", html)[1]
    assert "https://t.me/TestEscrowBot?start=" + code in html
    # then only its HMAC is stored
    link = TelegramLink.objects.get(user=alice)
    assert code not in link.code_hash
    assert link.chat_id is None
    # when she sends it to the bot and the poller runs
    bot.say(555, f"/start {code}")
    assert _poll(django_capture_on_commit_callbacks) == 1
    # then her chat is linked, the code spent, and the bot says so in that chat
    link.refresh_from_db()
    assert (link.chat_id, link.code_hash, link.code_expires_at) == (555, "", None)
    assert bot.sent() == [(555, telegram.LINKED_TEXT.format(username="alice"))]
    # and the next poll confirms the update (offset past it) and handles nothing again
    assert _poll(django_capture_on_commit_callbacks) == 0
    first, second = bot.offsets()
    assert second > first
    assert len(bot.sent()) == 1
    # and the settings page shows the link, with a way out
    page = client.get(reverse("settings")).content.decode()
    assert "Unlink Telegram" in page
    client.post(reverse("telegram_unlink"))
    assert not TelegramLink.objects.filter(user=alice).exists()


def test_wrong_expired_and_reused_codes_are_refused(
    alice, bob, bot, django_capture_on_commit_callbacks, outbound_inline
):
    # given alice linked chat 555 with her code
    code, _ = telegram.telegram_link_code_create(user=alice)
    bot.say(555, f"/start {code}")
    _poll(django_capture_on_commit_callbacks)
    # when someone else sends the same code again, then a made-up one
    bot.say(777, f"/start {code}")
    bot.say(777, "/start ABCDEFGHJK")
    # and bob's code is sent after it expired
    late, _ = telegram.telegram_link_code_create(user=bob)
    TelegramLink.objects.filter(user=bob).update(
        code_expires_at=timezone.now() - timedelta(seconds=1)
    )
    bot.say(888, f"/start {late}")
    # and a code in a group chat
    fresh, _ = telegram.telegram_link_code_create(user=bob)
    bot.say(-100, f"/start {fresh}", chat_type="group")
    assert _poll(django_capture_on_commit_callbacks) == 4
    # then each is refused and nothing changed hands
    assert bot.sent()[1:] == [
        (777, telegram.REFUSED_TEXT),
        (777, telegram.REFUSED_TEXT),
        (888, telegram.REFUSED_TEXT),
    ]  # (the group got no answer)
    assert TelegramLink.objects.get(user=alice).chat_id == 555
    assert TelegramLink.objects.get(user=bob).chat_id is None
    # when bob sends his fresh code from a private chat, it still works (a lowercase typo too)
    bot.say(888, f"/start {fresh.lower()}")
    _poll(django_capture_on_commit_callbacks)
    assert TelegramLink.objects.get(user=bob).chat_id == 888


def test_important_events_arrive_as_send_message(
    alice, bob, bot, queued, django_capture_on_commit_callbacks, outbound_inline
):
    # given alice (the seller) on chat 555 and bob (the buyer) on chat 666
    _link(bot, alice, 555, django_capture_on_commit_callbacks)
    _link(bot, bob, 666, django_capture_on_commit_callbacks)
    linked = len(bot.sent())
    # when bob takes alice's offer, marks it paid, and alice releases
    with django_capture_on_commit_callbacks(execute=True):
        trade = make_trade(alice, bob)
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    with django_capture_on_commit_callbacks(execute=True):
        escrow.escrow_release(trade_id=trade.pk, actor=alice)
    # then each went to the chat of whoever must act or waits, with the in-app text
    n = trade.pk
    assert bot.sent()[linked:] == [
        (555, f"bob opened trade #{n} on your offer #{trade.offer_id}: 0.01000000 BTC for 800.00 EUR."),
        (555, f"bob marked trade #{n} paid: check that 800.00 EUR arrived, then release the BTC."),
        (666, f"Trade #{n}: 0.01000000 BTC released to bob; settling now."),
    ]  # fmt: skip
    # when another trade is disputed: both parties hear of it
    linked = len(bot.sent())
    with django_capture_on_commit_callbacks(execute=True):
        other = make_trade(alice, bob)
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_dispute(trade_id=other.pk, actor=bob, reason="paid but could not mark it")
    disputed = [(chat, text) for chat, text in bot.sent()[linked:] if "dispute" in text]
    assert sorted(chat for chat, _ in disputed) == [555, 666]
    assert all(
        text.startswith(f"bob opened a dispute on trade #{other.pk}") for _, text in disputed
    )
    # and a chat message reaches nobody's Telegram unless they asked for chat there
    linked = len(bot.sent())
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_message_send(trade_id=other.pk, actor=bob, text="hello?")
    assert bot.sent()[linked:] == []
    preferences.preferences_set(user=alice, changes=[{"category": "chat", "telegram": True}])
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_message_send(trade_id=trade.pk, actor=bob, text="thanks!")
    assert bot.sent()[linked:] == [(555, f"bob wrote in trade #{trade.pk}: thanks!")]


def test_a_margin_call_reaches_the_borrowers_telegram(
    alice, bot, queued, django_capture_on_commit_callbacks, outbound_inline
):
    # given alice borrowing USDT against ETH, her chat linked
    loan, _, _ = _usdt_loan(alice, django_capture_on_commit_callbacks)
    _link(bot, alice, 555, django_capture_on_commit_callbacks)
    linked = len(bot.sent())
    # when ETH falls past the margin-call line
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1800")
    with django_capture_on_commit_callbacks(execute=True):
        lending.loans_check_ltv()
    # then the margin call is in her chat
    ((chat, text),) = bot.sent()[linked:]
    assert chat == 555
    assert text.startswith(f"Loan #{loan.pk}: margin call. Its LTV is 77.")


def test_a_failing_bot_api_is_retried(
    alice, bob, bot, django_capture_on_commit_callbacks, outbound_inline
):
    # given alice linked, and a Bot API that fails twice (a 500, then a 429 with retry_after)
    _link(bot, alice, 555, django_capture_on_commit_callbacks)
    bot.failures += [
        (500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}),
        (429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 30}}),
    ]
    # when a trade opens on her offer
    with django_capture_on_commit_callbacks(execute=True):
        trade = make_trade(alice, bob)
    # then the first attempt failed and waits for its backoff
    message = OutboundMessage.objects.get(channel="telegram", category="trade_opened")
    assert (message.status, message.attempts, message.last_error) == ("pending", 1, "temporary")
    assert outbound.outbound_deliver(message_id=message.pk) is None  # not due yet
    # when it is due: the second attempt meets the 429, and waits at least what it asked
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    before = timezone.now()
    message = outbound.outbound_deliver(message_id=message.pk)
    assert (message.status, message.attempts) == ("pending", 2)
    assert message.next_attempt_at >= before + timedelta(seconds=30)
    # when it is due again, it goes through; a retry after that sends nothing more
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    message = outbound.outbound_deliver(message_id=message.pk)
    assert (message.status, message.attempts, message.last_error) == ("sent", 3, "")
    assert outbound.outbound_deliver(message_id=message.pk) is None
    opened = [c for c in bot.sent() if f"trade #{trade.pk}" in c[1]]
    assert len(opened) == 3  # three attempts reached the API; one was accepted
    # and a chat unlinked meanwhile gets nothing: the row fails without a call
    telegram.telegram_unlink(user=alice)
    calls = len(bot.sent())
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    assert len(bot.sent()) == calls
