"""The cache on a request's hot path (issue 17): credentials, rate limits, the order book.

Two things Django's cache API does not give:

- one round trip for several operations (the throttles' Lua script): the raw redis-py client
  behind Django's RedisCache (common.cache's subclass), or None for any other backend (tests
  that swap in a local-memory cache), where callers use the portable path;
- a short breaker: the first failed call marks Redis down for this process for
  BREAK_SECONDS, and every hot-path call skips it meanwhile (each would otherwise wait for its
  own socket timeout: a frozen Redis then costs a request one timeout, not one per look-up).

Everything here fails open: a cache that is down makes a request slower, never refused."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

BREAK_SECONDS = 5.0
_down_until = 0.0


def available() -> bool:
    return time.monotonic() >= _down_until


def mark_down(exc: BaseException) -> None:
    global _down_until
    if available():
        logger.warning("hot-path cache unavailable for %.0f s: %s", BREAK_SECONDS, exc)
    _down_until = time.monotonic() + BREAK_SECONDS


def reset() -> None:
    """Forget a recorded outage (tests)."""
    global _down_until
    _down_until = 0.0


def raw_client() -> Any | None:
    """redis-py's client behind the default cache, or None when it is not Redis."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    return backend._cache.get_client(write=True)  # type: ignore[attr-defined]


def get(key: str) -> Any:
    """cache.get, or None while Redis is down."""
    if not available():
        return None
    try:
        return cache.get(key)
    except Exception as exc:
        mark_down(exc)
        return None


def get_many(keys: list[str]) -> dict[str, Any]:
    if not available():
        return {}
    try:
        return cache.get_many(keys)
    except Exception as exc:
        mark_down(exc)
        return {}


def set(key: str, value: Any, timeout: float) -> None:
    if not available():
        return
    try:
        cache.set(key, value, timeout)
    except Exception as exc:
        mark_down(exc)


def add(key: str, value: Any, timeout: float) -> bool | None:
    """cache.add: True if the key was absent and is now set; None while Redis is down."""
    if not available():
        return None
    try:
        return bool(cache.add(key, value, timeout))
    except Exception as exc:
        mark_down(exc)
        return None


def delete_many(keys: list[str]) -> None:
    """Invalidation: tried even while the breaker is open (a revocation must not be skipped
    because an earlier read failed); a failure is logged, and the entries' TTL bounds them."""
    if not keys:
        return
    try:
        cache.delete_many(keys)
    except Exception as exc:
        mark_down(exc)


# Each key: INCR an existing counter, else start it at ARGV[1] (the time in ns, far from any
# value a reader cached before the counter went missing). Django's Redis cache stores an int
# as its plain digits, so its get() reads what this wrote.
_INCR_LUA = """
for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
        redis.call('INCR', key)
    else
        redis.call('SET', key, ARGV[1])
    end
end
return #KEYS
"""


def incr_many(keys: list[str]) -> None:
    """Bump version counters, in one round trip on Redis (Django's incr() takes two a key: an
    EXISTS, then the INCR); tried even while the breaker is open, like delete_many."""
    if not keys:
        return
    if raw_client() is not None:
        run_script(_INCR_LUA, keys, [time.time_ns()])
        return
    try:  # another backend (a test's local memory): the portable path
        for key in keys:
            try:
                cache.incr(key)
            except ValueError:
                cache.set(key, time.time_ns(), None)
    except Exception as exc:
        mark_down(exc)


# --- for scripts that read Django's entries in Redis (common.api: credentials and limits) ---


def full_key(key: str) -> str:
    """The key Django's cache stores `key` under (its prefix and version)."""
    return cache.make_key(key)


def loads(raw: bytes) -> Any:
    """A value as Django's Redis cache stored it (raw bytes read by a script)."""
    return caches["default"]._cache._serializer.loads(raw)  # type: ignore[attr-defined]


def get_many_raw(keys: list[str]) -> list[bytes | None] | None:
    """The stored bytes of each key (Django's keys, read in one MGET), for values that are not
    Django's (a script's plain strings) beside ones that are (hotcache.loads); None when the cache
    is not Redis or is down (the caller takes its portable path)."""
    client = raw_client()
    if client is None or not available():
        return None
    try:
        return list(client.mget([full_key(k) for k in keys]))
    except Exception as exc:
        mark_down(exc)
        return None


def set_ms(key: str, value: Any, ms: int) -> None:
    """cache.set for `ms` milliseconds (Django's timeouts are whole seconds); nothing when the
    cache is not Redis or is down."""
    client = raw_client()
    if client is None or not available() or ms <= 0:
        return
    try:
        data = caches["default"]._cache._serializer.dumps(value)  # type: ignore[attr-defined]
        client.set(full_key(key), data, px=ms)
    except Exception as exc:
        mark_down(exc)


_scripts: dict[str, Any] = {}


def run_script(lua: str, keys: list[str], args: list[Any]) -> Any:
    """A Lua script on Redis over Django's keys `keys` (prefixed here), in one round trip; None
    when the cache is not Redis, and None (the breaker set) when the call fails. Tried even while
    the breaker is open, like incr_many: scripts here write invalidations."""
    client = raw_client()
    if client is None:
        return None
    try:
        script = _scripts.get(lua)
        if script is None:
            script = _scripts.setdefault(lua, client.register_script(lua))
        return script(keys=[full_key(k) for k in keys], args=args, client=client)
    except Exception as exc:
        mark_down(exc)
        return None


def set_plain(key: str, value: str, timeout: float) -> None:
    """A plain string (not pickled: a script reads it) under Django's key for `key`; nothing
    when the cache is not Redis or is down."""
    client = raw_client()
    if client is None or not available():
        return
    try:
        client.set(full_key(key), value, ex=max(1, int(timeout)))
    except Exception as exc:
        mark_down(exc)
