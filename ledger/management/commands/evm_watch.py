from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ledger.evm.config import enabled
from ledger.evm.deposits import deposits_watch


class Command(BaseCommand):
    help = (
        "Run the deposit watcher (what the Celery beat task runs): once, or in a loop. Safe "
        "beside the beat task: one watcher at a time, each deposit credited once."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="one run, then exit")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between runs")

    def handle(self, *args: Any, **options: Any) -> None:
        if not enabled():
            raise CommandError("EVM_RPC_URL is not set: no chain to watch.")
        while True:
            result = deposits_watch()
            self.stdout.write(
                "busy: another watcher runs"
                if result.busy
                else f"tip #{result.tip} (head #{result.head}): scanned {result.scanned}, "
                f"seen {result.seen}, credited {result.credited}, dropped {result.dropped}"
                + (f", reorg of {result.reorg_depth} blocks" if result.reorg_depth else "")
            )
            self.stdout.flush()
            if options["once"]:
                return
            time.sleep(options["interval"])
