"""The embedded stand-in for Celery beat in `make run` without Redis: runs the beat schedule's
tasks in this process on their intervals. With REDIS_URL set, `celery beat` does this instead."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from config.celery import app


class Command(BaseCommand):
    help = "Run CELERY_BEAT_SCHEDULE's tasks in-process on their intervals (no broker needed)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="run every task once and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        app.loader.import_default_modules()
        schedule = {
            name: (entry["task"], float(entry["schedule"]))
            for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
        }
        due = dict.fromkeys(schedule, 0.0)
        while True:
            now = time.monotonic()
            for name, (task_name, interval) in schedule.items():
                if now >= due[name]:
                    try:
                        app.tasks[task_name].apply(throw=True)
                    except Exception as exc:
                        self.stderr.write(f"{name}: {exc!r}")
                    due[name] = now + interval
            if options["once"]:
                return
            time.sleep(max(0.5, min(due.values()) - time.monotonic()))
