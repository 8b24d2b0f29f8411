"""The cache's version counters (common.hotcache.incr_many, issue 17): what the order book and
the blocked sets are invalidated by. Bumped in one round trip to Redis whatever their number,
read back by Django's cache as plain integers, and bumped even while the breaker is open."""

from __future__ import annotations

import time

import pytest
import redis
from django.core.cache import cache

from common import hotcache


@pytest.fixture(autouse=True)
def _clean():
    if hotcache.raw_client() is None:
        pytest.skip("needs the Redis cache (scripts/with-services.sh)")
    cache.clear()
    hotcache.reset()
    yield
    cache.clear()
    hotcache.reset()


def test_existing_counters_go_up_by_one_and_missing_ones_start_far_away():
    cache.set("v:a", 7, None)
    before = time.time_ns()
    hotcache.incr_many(["v:a", "v:b"])
    assert cache.get("v:a") == 8
    fresh = cache.get("v:b")
    assert isinstance(fresh, int)
    assert fresh >= before  # far from any small value a reader may have cached
    hotcache.incr_many(["v:b"])
    assert cache.get("v:b") == fresh + 1


def test_any_number_of_counters_is_one_round_trip(monkeypatch):
    calls: list[str] = []
    real = redis.Redis.execute_command

    def counted(self, *args, **kwargs):
        calls.append(str(args[0]))
        return real(self, *args, **kwargs)

    hotcache.incr_many(["v:warm"])  # the script is loaded once per process
    monkeypatch.setattr(redis.Redis, "execute_command", counted)
    hotcache.incr_many([f"v:{n}" for n in range(5)])
    assert calls == ["EVALSHA"]
    monkeypatch.undo()
    assert all(isinstance(cache.get(f"v:{n}"), int) for n in range(5))


def test_counters_are_bumped_while_the_breaker_is_open():
    cache.set("v:a", 1, None)
    hotcache.mark_down(RuntimeError("an earlier read failed"))
    assert not hotcache.available()
    hotcache.incr_many(["v:a"])
    assert cache.get("v:a") == 2
