"""Live wake-ups after Redis restarts (issue 17's leftover): the process's sender loop keeps its
channel-layer connections pooled, and every one of them is dead after a restart. Each used to
fail one send ("Connection lost") before the pool replaced it; a send on a dropped connection is
now made once more, on a fresh one, and every wake-up arrives."""

from __future__ import annotations

import asyncio
import logging

from channels.layers import get_channel_layer

from notifications.live import events
from notifications.tests.test_live_burst import _in_own_thread

GROUPS = 8
SENDS = 200  # enough at once for the sender loop to pool several connections


def _burst(tag: str) -> None:
    """The publishers' side: plain calls, fire and forget, as the on-commit hooks make them."""
    for n in range(SENDS):
        events._group_send([f"{tag}.{n % GROUPS}"], {"type": "live.wake", "n": n}, wait=False)


def _received(tag: str) -> list[int]:
    """Subscribe GROUPS channels (on connections of their own), burst, and collect every send."""
    layer = get_channel_layer()

    async def scenario() -> list[int]:
        channels = [await layer.new_channel() for _ in range(GROUPS)]
        for i, name in enumerate(channels):
            await layer.group_add(f"{tag}.{i}", name)
        await asyncio.to_thread(_burst, tag)
        got = []
        for name in channels:
            for _ in range(SENDS // GROUPS):
                message = await asyncio.wait_for(layer.receive(name), timeout=20)
                got.append(message["n"])
        return sorted(got)

    return _in_own_thread(scenario)


def test_every_wake_up_after_a_redis_restart_arrives(redis_control, monkeypatch, caplog):
    monkeypatch.setattr(events, "_sender", None)  # a sender loop of this test's own
    # given a process whose sender loop has pooled connections
    assert _received("before") == list(range(SENDS))
    # when Redis restarts (empty, on the same port: the groups are subscribed again)
    redis_control.stop()
    redis_control.start()
    # then a burst through the same sender loop arrives whole, and nothing is logged as lost
    with caplog.at_level(logging.WARNING, logger="notifications.live.events"):
        assert _received("after") == list(range(SENDS))
    assert "not sent" not in caplog.text
