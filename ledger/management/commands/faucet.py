from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from common.errors import ApplicationError
from common.money import parse_amount
from ledger.evm import devchain
from ledger.evm.addresses import deposit_address_for
from ledger.evm.config import confirmations_required, enabled
from ledger.selectors import asset_get


class Command(BaseCommand):
    help = (
        "LOCAL NODE ONLY: send test coins (ETH, or USDT minted by TestUSD's deployer) from the "
        "local node's funded account to a user's deposit address; the watcher credits them."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("asset")
        parser.add_argument("amount")

    def handle(self, *args: Any, **options: Any) -> None:
        if not enabled():
            raise CommandError("EVM_RPC_URL is not set: no chain to send on.")
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        try:
            asset = asset_get(code=options["asset"].upper())
            amount = parse_amount(options["amount"], precision=asset.precision, field="amount")
            address = deposit_address_for(user=user).address
            tx_hash = devchain.faucet_send(to=address, asset_code=asset.code, amount=amount)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        except Exception as exc:  # the node's own refusals, a wrong chain
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"sent {amount.normalize():f} {asset.code} to {user.username}'s deposit address "
            f"{address} in {tx_hash}; credited after {confirmations_required()} confirmations"
        )
