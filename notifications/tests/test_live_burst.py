"""A burst of live wake-ups larger than the channel layer's connection pool is all sent (issue
17's leftover): the process's sends share one bound on those in flight, where each call used to
have its own and 2,000 fire-and-forget sends failed half with "Too many connections"."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from channels.layers import get_channel_layer

from notifications.live import events

GROUPS = 10
SENDS = 1500  # more than LIVE_REDIS_MAX_CONNECTIONS (1,000) at once without the shared bound


def _in_own_thread(scenario: Any) -> Any:
    """Run the coroutine function in an event loop of its own thread (the test's thread may have
    a loop left running by an earlier test: the browser's)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(scenario())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_burst_larger_than_the_pool_is_all_sent(caplog, monkeypatch):
    # A sender loop of its own, with fresh connections: an earlier test may have restarted
    # Redis under the process's loop (its pooled connections are then lost, and a send on one
    # fails once: the events stay in their streams, the pages' polling catches up).
    monkeypatch.setattr(events, "_sender", None)
    layer = get_channel_layer()

    def burst() -> None:  # the publishers' side: plain calls, fire and forget
        for n in range(SENDS):
            events._group_send([f"burst.{n % GROUPS}"], {"type": "live.wake", "n": n}, wait=False)

    async def scenario() -> dict[int, list[int]]:
        channels = [await layer.new_channel() for _ in range(GROUPS)]
        for i, name in enumerate(channels):
            await layer.group_add(f"burst.{i}", name)
        await asyncio.to_thread(burst)
        got: dict[int, list[int]] = {}
        for i, name in enumerate(channels):
            got[i] = []
            for _ in range(SENDS // GROUPS):
                message = await asyncio.wait_for(layer.receive(name), timeout=20)
                got[i].append(message["n"])
        return got

    with caplog.at_level(logging.WARNING, logger="notifications.live.events"):
        got = _in_own_thread(scenario)
    assert not [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    for i in range(GROUPS):
        assert sorted(got[i]) == list(range(i, SENDS, GROUPS))
