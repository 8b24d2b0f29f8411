"""The live sockets through Channels' WebsocketCommunicator, against the real Redis channel layer
and PostgreSQL (transactional: the consumers read from their own threads): who may connect, who
gets which events, resuming from an id, the inbound limits, and the bot stream's bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing.websocket import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

from accounts.services import api_key_create
from disputes.models import Dispute
from disputes.services import dispute_assign, dispute_open
from escrow import services as escrow
from marketplace.tests.factories import make_trade
from notifications.live.consumers import CLOSE_RATE, CLOSE_TOO_BIG, CLOSE_UNAUTHENTICATED
from notifications.live.routing import websocket_urlpatterns
from notifications.models import WebhookDelivery, WebhookEndpoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("trade_news_inline")]

APP = URLRouter(websocket_urlpatterns)
ORIGIN = b"http://127.0.0.1:8000"
QUIET = 0.3  # how long "nothing arrives" is listened for


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def session_cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def browser(
    cookie: bytes | None, *, origin: bytes = ORIGIN, after: str = ""
) -> WebsocketCommunicator:
    """A browser's socket: `cookie` is session_cookie(user), taken before the event loop runs."""
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8001")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    path = "/ws/v1/live/" + (f"?after={after}" if after else "")
    return WebsocketCommunicator(APP, path, headers=headers)


def bot(key: str, *, after: str = "") -> WebsocketCommunicator:
    path = "/ws/v1/stream/" + (f"?after={after}" if after else "")
    return WebsocketCommunicator(APP, path, headers=[(b"authorization", f"Token {key}".encode())])


async def connected(socket: WebsocketCommunicator) -> WebsocketCommunicator:
    ok, code = await socket.connect()
    assert ok, f"refused with {code}"
    hello = await socket.receive_json_from()
    assert hello["type"] == "hello"
    return socket


async def events_until(socket: WebsocketCommunicator, name: str) -> list[dict[str, Any]]:
    """Frames up to and including the first whose event (or webhook event) is `name`."""
    seen = []
    while True:
        frame = await socket.receive_json_from(timeout=5)
        seen.append(frame)
        if frame.get("event") == name:
            return seen


def sync(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    return sync_to_async(fn, thread_sensitive=True)


# --- who may connect ------------------------------------------------------------------------------


def test_an_unauthenticated_socket_is_refused(refdata):
    async def scenario() -> None:
        socket = browser(None)
        ok, code = await socket.connect()
        assert (ok, code) == (False, CLOSE_UNAUTHENTICATED)

    run(scenario)


def test_a_socket_from_another_origin_is_refused_even_with_the_session(alice):
    cookies = {"alice": session_cookie(alice)}

    async def scenario() -> None:
        for origin in (b"https://evil.example", b"null"):
            ok, _ = await browser(cookies["alice"], origin=origin).connect()
            assert not ok, origin
        # and the same cookie from the site's own origin is let in
        socket = await connected(browser(cookies["alice"]))
        await socket.disconnect()

    run(scenario)


def test_a_bot_needs_a_valid_token_or_api_key_with_read(alice):
    token = Token.objects.create(user=alice).key
    _, read_key = api_key_create(user=alice, name="reader", scopes=["read"])
    _, trade_key = api_key_create(user=alice, name="trader", scopes=["trade"])

    async def scenario() -> None:
        for key in (token, read_key):
            socket = await connected(bot(key))
            await socket.disconnect()
        for key in ("nope", "mk_nope", trade_key):
            ok, code = await bot(key).connect()
            assert (ok, code) == (False, CLOSE_UNAUTHENTICATED), key
        ok, code = await WebsocketCommunicator(APP, "/ws/v1/stream/").connect()
        assert (ok, code) == (False, CLOSE_UNAUTHENTICATED)

    run(scenario)


# --- who gets what ------------------------------------------------------------------------------


def test_a_user_gets_their_own_trades_events_and_cannot_join_anothers(alice, bob, carol):
    # given a trade between bob (buyer) and carol (seller), and alice, a stranger to it
    trade = make_trade(carol, bob)

    cookies = {
        "alice": session_cookie(alice),
        "bob": session_cookie(bob),
        "carol": session_cookie(carol),
    }

    async def scenario() -> None:
        stranger = await connected(browser(cookies["alice"]))
        buyer = await connected(browser(cookies["bob"]))
        seller = await connected(browser(cookies["carol"]))
        # when alice asks for bob's group or the trade's, she is refused
        for group in (f"live.user.{bob.pk}", f"trade.{trade.pk}", f"user.{bob.pk}"):
            await stranger.send_json_to({"type": "subscribe", "group": group})
            answer = await stranger.receive_json_from()
            assert answer["type"] == "error"
            assert answer["code"] == "forbidden"
        # and bob marks it paid
        await sync(escrow.trade_mark_paid)(trade_id=trade.pk, actor=bob)
        # then both parties' sockets say so, with the trade's id and a stream id
        for socket in (buyer, seller):
            frames = await events_until(socket, "trade.paid")
            paid = frames[-1]
            assert paid["trade"] == trade.pk
            assert paid["type"] == "event"
            assert "-" in paid["id"]
            assert "body" not in paid  # the page fetches what it shows over HTTP
        # carol's badge moved: the in-app notification of the move follows on the same commit
        badge = (await events_until(seller, "notification"))[-1]
        assert badge["unread"] >= 1
        assert badge["trade"] == trade.pk
        # and alice heard nothing
        assert await stranger.receive_nothing(timeout=QUIET)
        for socket in (stranger, buyer, seller):
            await socket.disconnect()

    run(scenario)


def test_a_moderator_gets_a_trades_events_only_once_its_dispute_is_assigned_to_them(
    alice, bob, refdata
):
    from django.contrib.auth import get_user_model

    moderator = get_user_model().objects.create_user("mod1", password="x", is_staff=True)
    moderator.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    trade = make_trade(alice, bob)
    dispute = dispute_open(
        trade_id=trade.pk,
        actor=bob,
        category=Dispute.Category.COULD_NOT_MARK_PAID,
        text="I paid but the button failed.",
    )

    cookies = {"moderator": session_cookie(moderator)}

    async def scenario() -> None:
        socket = await connected(browser(cookies["moderator"]))
        await sync(escrow.trade_message_send)(trade_id=trade.pk, actor=bob, text="hello?")
        assert await socket.receive_nothing(timeout=QUIET)
        # assigned to the dispute of the trade: now its news reaches them
        await sync(dispute_assign)(dispute_id=dispute.pk, actor=moderator)
        await sync(escrow.trade_message_send)(trade_id=trade.pk, actor=bob, text="still there?")
        frames = await events_until(socket, "trade.message")
        assert frames[-1]["trade"] == trade.pk
        await socket.disconnect()

    run(scenario)


# --- resuming -----------------------------------------------------------------------------------


def test_a_reconnecting_browser_gets_what_it_missed_from_its_last_id(alice, bob):
    trade = make_trade(alice, bob)

    cookies = {"alice": session_cookie(alice)}

    async def scenario() -> None:
        socket = await connected(browser(cookies["alice"]))
        await sync(escrow.trade_message_send)(trade_id=trade.pk, actor=bob, text="one")
        first = (await events_until(socket, "trade.message"))[-1]
        await socket.disconnect()
        # while away: a message and the move to paid
        await sync(escrow.trade_message_send)(trade_id=trade.pk, actor=bob, text="two")
        await sync(escrow.trade_mark_paid)(trade_id=trade.pk, actor=bob)
        back = await connected(browser(cookies["alice"], after=first["id"]))
        missed = await events_until(back, "trade.paid")
        names = [f["event"] for f in missed]
        assert "trade.message" in names
        assert "trade.paid" in names
        ids = [f["id"] for f in missed]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
        assert first["id"] not in ids
        await back.disconnect()

    run(scenario)


# --- inbound limits -------------------------------------------------------------------------------


def test_chat_frames_are_refused_chat_stays_on_http(alice):
    cookies = {"alice": session_cookie(alice)}

    async def scenario() -> None:
        socket = await connected(browser(cookies["alice"]))
        await socket.send_json_to({"type": "chat", "trade": 1, "text": "hi"})
        answer = await socket.receive_json_from()
        assert answer == {**answer, "type": "error", "code": "chat_over_http"}
        await socket.send_json_to({"type": "ping"})
        assert await socket.receive_json_from() == {"type": "pong"}
        await socket.disconnect()

    run(scenario)


def test_an_oversized_frame_closes_the_socket(alice):
    cookies = {"alice": session_cookie(alice)}

    async def scenario() -> None:
        socket = await connected(browser(cookies["alice"]))
        await socket.send_to(
            text_data=json.dumps({"type": "ping", "pad": "x" * settings.LIVE_MAX_FRAME_BYTES})
        )
        closed = await socket.receive_output()
        assert closed == {"type": "websocket.close", "code": CLOSE_TOO_BIG}

    run(scenario)


def test_a_flood_of_frames_closes_the_socket(alice):
    cookies = {"alice": session_cookie(alice)}

    async def scenario() -> None:
        socket = await connected(browser(cookies["alice"]))
        answers = 0
        for _ in range(settings.LIVE_INBOUND_BURST + 5):
            await socket.send_json_to({"type": "ping"})
        while True:
            output = await socket.receive_output()
            if output["type"] == "websocket.close":
                assert output["code"] == CLOSE_RATE
                break
            answers += 1
        # the burst was answered, then the socket closed (not one pong per frame sent)
        assert settings.LIVE_INBOUND_BURST <= answers < settings.LIVE_INBOUND_BURST + 5

    run(scenario)


# --- the bot stream -------------------------------------------------------------------------------


def test_the_bot_stream_sends_the_webhook_bodies_in_order_and_resumes(alice, bob):
    # given alice's bot, with a webhook too, so the two can be compared
    token = Token.objects.create(user=alice).key
    WebhookEndpoint.objects.create(user=alice, url="https://bot.example.com/hook", secret="s")
    trade = make_trade(alice, bob)

    async def scenario() -> None:
        stream = await connected(bot(token))
        await sync(escrow.trade_mark_paid)(trade_id=trade.pk, actor=bob)
        paid = await stream.receive_json_from(timeout=5)
        # chat and badge news are not webhook events: the stream skips them
        assert paid["event"] == "trade.paid"
        await stream.disconnect()
        # while the bot is away, alice releases
        await sync(escrow.escrow_release)(trade_id=trade.pk, actor=alice)
        back = await connected(bot(token, after=paid["id"]))
        released = await back.receive_json_from(timeout=5)
        assert released["event"] == "trade.released"
        assert _id(released["id"]) > _id(paid["id"])
        await back.disconnect()
        # from the oldest the stream keeps (after=0): the trade's whole life, in order
        replay = await connected(bot(token, after="0"))
        names = [(await replay.receive_json_from(timeout=5))["event"] for _ in range(3)]
        assert names == ["trade.created", "trade.paid", "trade.released"]
        await replay.disconnect()
        return paid, released

    frames: list[dict[str, Any]] = []

    async def collect() -> None:
        frames.extend(await scenario())  # type: ignore[misc]

    run(collect)
    # then each frame is the webhook's body plus its id (delivery_id names one delivery only)
    webhooks = {
        d.event: {k: v for k, v in d.payload.items() if k != "delivery_id"}
        for d in WebhookDelivery.objects.filter(endpoint__user=alice)
    }
    for frame in frames:
        body = {k: v for k, v in frame.items() if k != "id"}
        assert body == webhooks[frame["event"]]


def _id(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)
