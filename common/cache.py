"""Django's Redis cache backend, with one redis-py client per connection pool instead of one per
call (issue 17: a lean API path).

django.core.cache.backends.redis builds a new `redis.Redis` on every cache call (`get_client`
returns `Redis(connection_pool=pool)`), and redis-py 8's constructor is not cheap: it builds its
response callbacks (a case-insensitive dict of ~200 entries) and an event dispatcher each time.
Profiled (bench/profile_request.py) that was ~0.13 ms per cache call, 2-3 calls per API request,
more than the round trip to Redis itself. A `Redis` object holds no connection of its own (each
command borrows one from the pool, which is thread-safe and reset after a fork), so one per pool
serves every call; the pool, the serializer and every command stay Django's."""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient


class RedisCacheClient(DjangoRedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)  # type: ignore[attr-defined]
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient
