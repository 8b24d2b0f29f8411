"""Celery beat with a heartbeat: every pass of its loop touches BEAT_HEARTBEAT_FILE, so a health
check can tell a running beat from a hung one (`python -m operations.heartbeat`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

DEFAULT_FILE = "/tmp/celerybeat-heartbeat"  # noqa: S108 - the container's own /tmp


def heartbeat_file() -> Path:
    return Path(os.environ.get("BEAT_HEARTBEAT_FILE") or DEFAULT_FILE)


class HeartbeatScheduler(PersistentScheduler):
    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = super().tick(*args, **kwargs)
        heartbeat_file().touch()
        return float(interval)
