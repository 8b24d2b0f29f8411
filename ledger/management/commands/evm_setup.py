from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ledger.evm import devchain
from ledger.evm.config import enabled


class Command(BaseCommand):
    help = (
        "LOCAL NODE ONLY (`make run`): deploy TestUSD once (its address is recorded in the state "
        "file and reused while the node has it) and give the dev hot wallet gas money."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--state-file",
            default=str(Path(settings.BASE_DIR) / ".data" / "evm.env"),
            help="where the contract's address is kept (config/settings/local.py reads it)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not enabled():
            raise CommandError("EVM_RPC_URL is not set: no chain to set up.")
        try:
            address, deployed = devchain.testusd_deploy(Path(options["state_file"]))
            funded = devchain.hot_wallet_fund()
            backed = devchain.hot_wallet_back_liabilities(token=address)
        except Exception as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"TestUSD (USDT) {'deployed' if deployed else 'already'} at {address}"
            + (f"; hot wallet funded ({funded})" if funded else "")
            + (
                f"; the demo's credited balances backed on chain ({', '.join(backed)})"
                if backed
                else ""
            )
        )
