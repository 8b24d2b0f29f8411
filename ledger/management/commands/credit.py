from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from common.errors import ApplicationError
from ledger.services import deposit_credit


class Command(BaseCommand):
    help = "Credit a deposit to a user (demos; the manual chain adapter's moderator confirmation)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("asset")
        parser.add_argument("amount")
        parser.add_argument("--reference", default="manual credit")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        try:
            deposit = deposit_credit(
                user=user,
                asset_code=options["asset"],
                amount=options["amount"],
                reference=options["reference"],
                actor=None,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"credited {deposit.amount.normalize():f} {deposit.asset.code} to {user.username} (transfer #{deposit.transfer_id})"
        )
