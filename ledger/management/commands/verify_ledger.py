from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ledger.replay import sealed_count, verify_ledger


class Command(BaseCommand):
    help = (
        "Re-compute the hash chain, the Merkle roots of the checkpoints and the stored Merkle "
        "nodes, check the signatures and replay the balances; exit non-zero naming the first "
        "bad seq."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        show = not options["no_progress"] and sys.stderr.isatty()
        with tqdm(total=sealed_count(), unit="entry", disable=not show, file=sys.stderr) as bar:
            report = verify_ledger(progress=bar.update)
        for error in report.errors:
            self.stderr.write(error)
        if not report.ok:
            where = f" first bad seq: {report.first_bad_seq}" if report.first_bad_seq else ""
            raise CommandError(f"ledger verification FAILED:{where}")
        self.stdout.write(
            f"ledger OK: {report.entries} sealed entries chain correctly, {report.unsealed} awaiting seal, "
            f"{report.accounts} account balances match the transfers, every asset sums to zero."
        )
