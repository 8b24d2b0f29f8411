"""Reads of balances and transfers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet, Sum

from ledger.models import LedgerAccount, Transfer
from marketplace.models import Asset


@dataclass(frozen=True)
class Wallet:
    asset: Asset
    available: Decimal
    escrow: Decimal
    pending_withdrawal: Decimal


def wallet_list_for_user(*, user: Any) -> list[Wallet]:
    """One wallet per active asset: available, held in escrow, being withdrawn."""
    accounts = {
        a.asset_id: a for a in LedgerAccount.objects.filter(user=user, kind=LedgerAccount.Kind.USER)
    }
    # Holds not yet resolved, split by what they are for.
    pending = (
        Transfer.objects.filter(
            debit_account__in=accounts.values(),
            flags=Transfer.Flags.PENDING,
            resolution__isnull=True,
        )
        .values("asset_id", "kind")
        .annotate(total=Sum("amount"))
    )
    held: dict[tuple[int, str], Decimal] = {(p["asset_id"], p["kind"]): p["total"] for p in pending}
    wallets = []
    for asset in Asset.objects.filter(is_active=True).order_by("code"):
        account = accounts.get(asset.pk)
        wallets.append(
            Wallet(
                asset=asset,
                available=account.available if account else Decimal(0),
                escrow=held.get((asset.pk, Transfer.Kind.ESCROW_HOLD), Decimal(0)),
                pending_withdrawal=held.get((asset.pk, Transfer.Kind.WITHDRAWAL), Decimal(0)),
            )
        )
    return wallets


def balance_available(*, user: Any, asset_code: str) -> Decimal:
    account = LedgerAccount.objects.filter(
        user=user, kind=LedgerAccount.Kind.USER, asset__code=asset_code
    ).first()
    return account.available if account else Decimal(0)


def transfer_list_for_user(*, user: Any) -> QuerySet[Transfer]:
    return (
        Transfer.objects.filter(Q(debit_account__user=user) | Q(credit_account__user=user))
        .select_related("asset", "debit_account", "credit_account")
        .order_by("-id")
    )
