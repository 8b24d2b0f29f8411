from __future__ import annotations

import json
from typing import Any, cast

from django.core.management.base import BaseCommand

from ledger.models import Transfer
from ledger.services import transfer_entry


class Command(BaseCommand):
    help = "Stream sealed ledger entries as JSON lines, for `python -m ledger.verify export`."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--upto", type=int, help="the last seq to export (default: all sealed)")

    def handle(self, *args: Any, **options: Any) -> None:
        qs = Transfer.objects.filter(seq__isnull=False).select_related(
            "asset", "debit_account", "credit_account"
        )
        if options["upto"]:
            qs = qs.filter(seq__lte=options["upto"])
        for transfer in qs.order_by("seq").iterator(chunk_size=5000):
            row = {
                "seq": transfer.seq,
                "entry": transfer_entry(transfer, seq=cast(int, transfer.seq)),
                "prev_hash": transfer.prev_hash,
                "hash": transfer.hash,
            }
            self.stdout.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False))
