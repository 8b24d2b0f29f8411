"""The two sockets. Both read the user's event stream (events.py) from the last id they sent:
on connect (from `?after=<id>`, the client's last id) and on every wake-up of the user's group.

Inbound frames are few and small: `{"type": "ping"}`, and on the browser socket
`{"type": "subscribe", "group": "book"}` (the public order book). Chat is not accepted here: it
stays on HTTP (CSRF, attachments as multipart, the chat's own rate limit, idempotency), and a
chat frame is answered with an error naming that. Every connection has a frame-size limit and a
rate limit (a token bucket); past either the socket is closed."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from typing import Any
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from notifications.live import events

logger = logging.getLogger(__name__)

# Close codes: 1008 policy violation (rate), 1009 too big; 4401/4403 before accept are
# refused handshakes (unauthenticated / not allowed); 4401 after accept: the session ended or
# the credential was revoked.
CLOSE_RATE = 1008
CLOSE_TOO_BIG = 1009
CLOSE_UNAUTHENTICATED = 4401
BATCH = 200

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def _aredis() -> aioredis.Redis:
    """One pooled client per event loop (uvicorn has one): not one connection per socket."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.LIVE_REDIS_URL,
            decode_responses=True,
            socket_connect_timeout=1,
            max_connections=settings.LIVE_REDIS_MAX_CONNECTIONS,
        )
        _clients[loop] = client
    return client


async def read_backlog(
    *, user_id: int, after: str, count: int = BATCH, check_gap: bool = False
) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """The user's events after id `after` ("0": from the oldest kept), oldest first, at most
    `count`; with check_gap, whether an event after `after` was trimmed away meanwhile (the
    client must then redraw what it shows)."""
    client = _aredis()
    key = events.stream_key(user_id)
    start = f"({after}" if after and after != "0" else "-"
    rows: list[Any] = await client.xrange(key, min=start, max="+", count=count) or []
    gap = False
    if check_gap and after and after != "0":
        try:
            info = await client.xinfo_stream(key)
        except aioredis.ResponseError:
            info = None
        deleted = (info or {}).get("max-deleted-entry-id") or "0-0"
        gap = events.id_tuple(deleted) > events.id_tuple(after)
    return [(event_id, json.loads(fields["e"])) for event_id, fields in rows], gap


async def newest_id(user_id: int) -> str:
    rows: list[Any] = await _aredis().xrevrange(events.stream_key(user_id), count=1) or []
    return str(rows[0][0]) if rows else "0"


class _Bucket:
    """A token bucket: `rate` frames a second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _EventSocket(AsyncWebsocketConsumer):
    """What both sockets share: authentication refused before the handshake, the user's group,
    resuming from `?after=`, the inbound limits."""

    user_id: int
    last_id: str

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id = user.pk
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        after = (query.get("after") or [""])[-1]
        # No id: from now on (the page rendered, or the bot starts, with what is there now);
        # "0": everything the stream still keeps.
        self.last_id = after if events.valid_event_id(after) else await newest_id(self.user_id)
        self.bucket = _Bucket(settings.LIVE_INBOUND_PER_SECOND, settings.LIVE_INBOUND_BURST)
        self.groups_joined: set[str] = set()
        await self._join(events.user_group(self.user_id))
        # The group that closes this socket when its session or credential is revoked.
        revoke_group = self.revoke_group()
        if revoke_group is not None:
            await self._join(revoke_group)
        await self.accept()
        await self.send_json({"type": "hello", "last_id": self.last_id})
        # From the stream, not from "now": what happened while the client was away comes first.
        await self.catch_up(check_gap=True)

    def revoke_group(self) -> str | None:
        raise NotImplementedError

    async def _join(self, group: str) -> None:
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_add(group, self.channel_name)
        self.groups_joined.add(group)

    async def disconnect(self, code: int) -> None:
        layer = get_channel_layer()
        for group in getattr(self, "groups_joined", ()):
            if layer is not None:
                await layer.group_discard(group, self.channel_name)

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")))

    # --- outbound -------------------------------------------------------------------------------

    async def live_wake(self, message: dict[str, Any]) -> None:
        await self.catch_up()

    async def live_revoke(self, message: dict[str, Any]) -> None:
        """The session logged out or was ended, or the token or key was revoked: nothing more
        goes out on this socket."""
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def catch_up(self, *, check_gap: bool = False) -> None:
        """Everything after the last id sent, in stream order (a wake-up may cover several
        events, or none left: two publishers' wake-ups may arrive in either order)."""
        try:
            while True:
                rows, gap = await read_backlog(
                    user_id=self.user_id, after=self.last_id, check_gap=check_gap
                )
                check_gap = False
                if gap:
                    await self.send_json({"type": "gap"})
                for event_id, event in rows:
                    out = self.render(event_id, event)
                    if out is not None:
                        await self.send_json(out)
                    self.last_id = event_id
                if len(rows) < BATCH:
                    return
        except Exception:
            logger.warning("reading the live events of user %s failed", self.user_id,
                           exc_info=True)  # fmt: skip

    def render(self, event_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    # --- inbound --------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.LIVE_MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        if not self.bucket.take():
            await self.close(code=CLOSE_RATE)
            return
        try:
            frame = json.loads(text_data or "")
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            await self.send_json({"type": "error", "code": "bad_frame",
                                  "message": "Send a JSON object with a type."})  # fmt: skip
            return
        kind = frame.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind in ("chat", "message"):
            await self.send_json({
                "type": "error", "code": "chat_over_http",
                "message": "Chat is sent over HTTP: POST /api/v1/trades/{id}/messages/ or the "
                "trade room's form.",
            })  # fmt: skip
        else:
            await self.on_frame(str(kind), frame)

    async def on_frame(self, kind: str, frame: dict[str, Any]) -> None:
        await self.send_json({"type": "error", "code": "unsupported",
                              "message": f"Unknown frame type {kind!r}."})  # fmt: skip


class LiveConsumer(_EventSocket):
    """/ws/v1/live/: the browser's socket (session cookie, origin checked in routing.py). It
    carries ids and names only: the page fetches what changed over HTTP, through the same
    views and permission checks as a reload (the badge count is the header's own figure)."""

    def revoke_group(self) -> str | None:
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        return events.session_group(key) if key else None

    async def on_frame(self, kind: str, frame: dict[str, Any]) -> None:
        if kind != "subscribe":
            await super().on_frame(kind, frame)
            return
        group = frame.get("group")
        if group == "book":
            await self._join(events.BOOK_GROUP)
            await self.send_json({"type": "subscribed", "group": "book"})
            return
        # A user's trades, loans and notifications come to their own group, which the server
        # chose from the session; no frame can name another group.
        await self.send_json({"type": "error", "code": "forbidden",
                              "message": "Only the public group 'book' can be subscribed to."})  # fmt: skip

    def render(self, event_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {"type": "event", "id": event_id, "event": event.get("event")}
        for key in ("trade", "loan", "unread", "at"):
            if event.get(key) is not None:
                out[key] = event[key]
        return out

    async def live_book(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "book", "asset": message["asset"], "fiat": message["fiat"]})


class BotStreamConsumer(_EventSocket):
    """/ws/v1/stream/: a bot's socket (Authorization: Token <token or API key>). It sends the
    webhook events of the account, each the webhook's JSON body plus `id` (the stream's id to
    resume from with ?after=); `delivery_id`, which names one webhook delivery, is not there."""

    def revoke_group(self) -> str | None:
        credential = self.scope.get("credential_hash")
        return events.credential_group(credential) if credential else None

    def render(self, event_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
        body = event.get("body")
        if not body:
            return None
        return {**body, "id": event_id}
