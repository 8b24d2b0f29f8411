"""gunicorn's settings for the image: `gunicorn -c python:operations.gunicorn config.wsgi`.

JSON lines for gunicorn's own log, like the app's; prometheus-client's multiprocess files in
PROMETHEUS_MULTIPROC_DIR (emptied at start, a dead worker's live gauges dropped), so /metrics
counts the requests of every worker whichever one answers the scrape."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from operations.logs import logging_config

logconfig_dict = logging_config(level=os.environ.get("LOG_LEVEL", "INFO"))
# gunicorn merges this over its defaults key by key: its own loggers must name our handler.
logconfig_dict["loggers"] = {
    name: {"handlers": ["console"], "level": "INFO", "propagate": False}
    for name in ("gunicorn.error", "gunicorn.access")
}
# The app logs its requests with their ids; gunicorn's access line would only repeat the path.
accesslog = None


def on_starting(server: Any) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
