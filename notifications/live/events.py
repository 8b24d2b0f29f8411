"""The live events: a bounded Redis stream per user holds every event addressed to them (its id,
"<ms>-<n>", grows monotonically), and a wake-up goes to the user's channel-layer group. A socket
reads its user's stream from the last id it sent, so nothing is lost or reordered across a
reconnect or between two publishers racing; the group message only says "read now".

Published only after the commit that made the news (the callers are on-commit listeners): what a
socket announces is always there when the page asks for it. Publishing never raises into the
caller: a live event lost to a Redis outage is caught up by the page's polling fallback."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

# Group sends in flight at once in a process, all its publishers together (a notification to
# every moderator, a fan-out, a burst of moves): each holds one of the channel layer's pooled
# Redis connections, and past the pool's size (LIVE_REDIS_MAX_CONNECTIONS) a send fails.
SEND_CONCURRENCY = 32
# The one public group: the order book changed (its offers are public).
BOOK_GROUP = "live.book"


def user_group(user_id: int) -> str:
    """The private group of one user's sockets (browser tabs and bots); only the server names
    it, from the socket's authenticated user."""
    return f"live.user.{user_id}"


def session_group(session_key: str) -> str:
    """The browser sockets opened with one session (the key's hash names it: the key itself,
    a credential, stays out of Redis)."""
    return f"live.session.{hashlib.sha256(session_key.encode()).hexdigest()[:40]}"


def credential_group(credential_hash: str) -> str:
    """The bot sockets opened with one token or API key, named by the credential's SHA-256
    (accounts.services.keys.hash_key; an API key's stored key_hash)."""
    return f"live.cred.{credential_hash[:64]}"


def close_sockets(groups: list[str]) -> None:
    """Close every socket of these groups (a session ended, a credential was revoked): each
    closes with the policy code 4401 and reconnecting needs a credential that works."""
    if not groups:
        return
    try:
        _group_send(groups, {"type": "live.revoke"})
    except Exception:
        logger.warning("closing %s revoked live socket group(s) failed", len(groups), exc_info=True)


def stream_key(user_id: int) -> str:
    return f"{settings.LIVE_KEY_PREFIX}:u:{user_id}"


_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(
            settings.LIVE_REDIS_URL,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            decode_responses=True,
        )
    return _client


def publish(*, user_ids: Iterable[int], event: dict[str, Any]) -> dict[int, str]:
    """Append `event` (JSON-able) to each user's stream and wake their sockets. Returns each
    user's event id."""
    return publish_each([(user_id, event) for user_id in sorted(set(user_ids))])


def publish_each(items: list[tuple[int, dict[str, Any]]]) -> dict[int, str]:
    """Each (user, event): appended to that user's stream, in one Redis round trip, then one
    wake-up per user through the channel layer. `at` is set to the publish time (ms since the
    epoch), for the latency benchmark. Returns the id of each user's last event."""
    if not items:
        return {}
    now = round(time.time() * 1000, 3)
    ids: dict[int, str] = {}
    try:
        pipe = _redis().pipeline(transaction=False)
        for user_id, event in items:
            body = json.dumps({**event, "at": now}, separators=(",", ":"))
            pipe.xadd(
                stream_key(user_id), {"e": body}, maxlen=settings.LIVE_BACKLOG, approximate=True
            )
            pipe.expire(stream_key(user_id), settings.LIVE_BACKLOG_SECONDS)
        results = pipe.execute()
        ids = {user_id: results[2 * i] for i, (user_id, _) in enumerate(items)}
        _wake([user_group(u) for u in ids])
    except Exception:
        logger.warning(
            "%s live event(s) (%s...) not published",
            len(items),
            items[0][1].get("event"),
            exc_info=True,
        )
    return ids


def publish_book(*, asset: str, fiat: str) -> None:
    """The order book of a pair changed: public, not stored (a page that reconnects reloads its
    book once)."""
    try:
        _group_send([BOOK_GROUP], {"type": "live.book", "asset": asset, "fiat": fiat}, wait=False)
    except Exception:
        logger.warning("live book event %s/%s not published", asset, fiat, exc_info=True)


# Wake-ups held back by `wakes_merged`: a move's trade event and the badge of the news it wrote
# wake the same people, once.
_held_wakes: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "live_held_wakes", default=None
)


@contextmanager
def wakes_merged() -> Iterator[None]:
    """Inside, events go to their streams at once but their wake-ups are held, then sent
    together when the block ends: each socket is woken once, and one channel-layer send goes
    out instead of one a publish (a move's trade event, then its in-app news)."""
    if _held_wakes.get() is not None:  # nested: the outer block sends them
        yield
        return
    token = _held_wakes.set(set())
    try:
        yield
    finally:
        groups = _held_wakes.get() or set()
        _held_wakes.reset(token)
        if groups:
            try:
                _group_send(sorted(groups), {"type": "live.wake"}, wait=False)
            except Exception:  # the events are in their streams: the page's polling finds them
                logger.warning("live wake-up of %s group(s) not sent", len(groups), exc_info=True)


def _wake(groups: list[str]) -> None:
    # Not waited for: the events are in the streams already, the wake-up only says "read now".
    held = _held_wakes.get()
    if held is not None:
        held.update(groups)
        return
    _group_send(groups, {"type": "live.wake"}, wait=False)


# The channel layer is asyncio code. Each process sends through one event loop of its own, in a
# daemon thread started on first use (and again in a forked child: gunicorn and Celery fork):
# channels-redis keeps its Redis connections per loop, so they stay open from one send to the
# next. (async_to_sync made a fresh loop, and fresh connections, for every send: ~10-20 ms of a
# request's time here, most of a trade move's live cost; bench/profile_trade.py.)
# The loop's semaphore bounds the sends in flight across every call (one per call let a burst of
# fire-and-forget publishes open more connections than the pool holds: "Too many connections").
_sender_lock = threading.Lock()
_sender: tuple[int, asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None


def _sender_loop() -> tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]:
    global _sender
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid() or _sender[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="live-sender", daemon=True).start()
            _sender = (os.getpid(), loop, asyncio.Semaphore(SEND_CONCURRENCY))
        return _sender[1], _sender[2]


def _group_send(groups: list[str], message: dict[str, Any], *, wait: bool = True) -> None:
    """Send `message` to each group. `wait`: until sent (at most 5 s; raises what failed), else
    in the background (a failure is logged)."""
    layer = get_channel_layer()
    if layer is None or not groups:
        return

    loop, slots = _sender_loop()

    async def send_all() -> None:
        # At most SEND_CONCURRENCY sends of the process at once (the layer's connection pool is
        # bounded), and bounded in time like the cache's Redis calls: a stalled Redis must not
        # stall the request whose commit this announces (the page's polling fallback catches
        # up). A burst queues here for its slots, within the same 5 s.
        async def send(group: str) -> None:
            async with slots:
                # A pooled connection that Redis dropped (a restart) fails its next send, and
                # only then leaves the pool; after a restart every pooled one is dead, and the
                # pool holds at most SEND_CONCURRENCY: again until a fresh one takes it (a Redis
                # that is down refuses each at once; the 5 s below bound them all).
                for attempt in range(SEND_CONCURRENCY + 1):
                    try:
                        await layer.group_send(group, message)
                        return
                    except (redis.exceptions.ConnectionError, ConnectionError):
                        if attempt == SEND_CONCURRENCY:
                            raise

        await asyncio.wait_for(asyncio.gather(*(send(g) for g in groups)), timeout=5)

    future = asyncio.run_coroutine_threadsafe(send_all(), loop)
    if wait:
        future.result(timeout=6)
        return

    def logged(done: Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            logger.warning(
                "live %s to %s group(s) not sent",
                message.get("type"),
                len(groups),
                exc_info=done.exception(),
            )

    future.add_done_callback(logged)


def id_tuple(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def valid_event_id(value: str) -> bool:
    """A resume id from a client: "<ms>-<n>" (or "0"), nothing else reaches Redis."""
    if value == "0":
        return True
    ms, sep, seq = value.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit() and len(value) <= 41


def last_id(*, user_id: int) -> str:
    """The newest event id of the user ("0" when none, or Redis can't say: the socket then
    starts from the oldest kept, which at worst redraws a panel twice)."""
    try:
        rows: Any = _redis().xrevrange(stream_key(user_id), max="+", min="-", count=1)
    except Exception:
        logger.warning("reading the last live event id of user %s failed", user_id, exc_info=True)
        return "0"
    return str(rows[0][0]) if rows else "0"
