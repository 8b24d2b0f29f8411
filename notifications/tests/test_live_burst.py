"""A burst of live wake-ups larger than the channel layer's connection pool is all sent (issue
17's leftover): the process's sends share one bound on those in flight, where each call used to
have its own and 2,000 fire-and-forget sends failed half with "Too many connections"."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from notifications.live import events

GROUPS = 10
SENDS = 1500  # more than LIVE_REDIS_MAX_CONNECTIONS (1,000) at once without the shared bound


def test_a_burst_larger_than_the_pool_is_all_sent(caplog):
    layer = get_channel_layer()

    async def join() -> list[str]:
        names = [await layer.new_channel() for _ in range(GROUPS)]
        for i, name in enumerate(names):
            await layer.group_add(f"burst.{i}", name)
        return names

    channels = async_to_sync(join)()
    with caplog.at_level(logging.WARNING, logger="notifications.live.events"):
        for n in range(SENDS):
            events._group_send([f"burst.{n % GROUPS}"], {"type": "live.wake", "n": n}, wait=False)

        async def drain() -> dict[int, list[int]]:
            got: dict[int, list[int]] = {}
            for i, name in enumerate(channels):
                got[i] = []
                for _ in range(SENDS // GROUPS):
                    message = await asyncio.wait_for(layer.receive(name), timeout=20)
                    got[i].append(message["n"])
            return got

        got = async_to_sync(drain)()
    assert not [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    for i in range(GROUPS):
        assert sorted(got[i]) == list(range(i, SENDS, GROUPS))
