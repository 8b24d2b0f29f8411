"""`manage.py reserves reconcile|publish [--asset ETH]`: what the beat tasks do, now, with the
figures printed (docs/chain.md "Reserves")."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import ApplicationError
from common.money import fmt
from ledger.evm import reserves


class Command(BaseCommand):
    help = "Reconcile the chain's holdings with the ledger, or publish a signed proof of reserves."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["reconcile", "publish"])
        parser.add_argument("--asset", help="one asset code (default: every asset on the chain)")

    def handle(self, *args: Any, **options: Any) -> None:
        asset = options["asset"].upper() if options["asset"] else None
        try:
            if options["action"] == "reconcile":
                rows = reserves.reserves_reconcile(asset_code=asset)
                count = len(rows)
                for r in rows:
                    p = r.asset.precision
                    if r.status == r.Status.FAILED:
                        self.stdout.write(f"{r.asset.code}: FAILED: {r.error}")
                        continue
                    self.stdout.write(
                        f"{r.asset.code}: {r.status} at block {r.block_number}: on chain "
                        f"{fmt(r.onchain_total, p)} (hot {fmt(r.hot_wallet, p)}, "
                        f"{r.address_count} addresses), in transit {fmt(r.in_transit, p)}, "
                        f"owed {fmt(r.liabilities, p)}, difference {fmt(r.difference, p)}"
                    )
            else:
                proofs = reserves.reserves_proof_publish(asset_code=asset)
                count = len(proofs)
                for proof in proofs:
                    p = proof.precision
                    self.stdout.write(
                        f"{proof.asset.code}: proof #{proof.pk} at block {proof.block_number}: "
                        f"{fmt(proof.onchain_total, p)} on chain, "
                        f"{fmt(proof.liabilities_total, p)} owed to {proof.leaf_count} accounts, "
                        f"root {proof.liabilities_root}"
                    )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if not count:
            self.stdout.write("No asset is on the chain (EVM_RPC_URL unset, or no such asset).")
