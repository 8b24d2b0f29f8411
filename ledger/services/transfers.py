"""Accounts and transfers: the only code that writes transfers and balances.

transfer_* run inside the caller's transaction and lock the two accounts in pk order, so two
transfers over the same accounts queue instead of deadlocking.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.db import transaction

from common.errors import Conflict, InsufficientFunds, InvalidTransition
from common.money import fmt
from ledger.models import LedgerAccount, Transfer
from marketplace.models import Asset

logger = logging.getLogger(__name__)

Flags = Transfer.Flags
Kind = LedgerAccount.Kind

# --- accounts ---------------------------------------------------------------------------------


def account_for_user(*, user: Any, asset: Asset) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        kind=Kind.USER, user=user, asset=asset, defaults={"code": f"user:{user.pk}:{asset.code}"}
    )
    return account


def account_world(*, asset: Asset) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        code=f"world:{asset.code}", defaults={"kind": Kind.WORLD, "asset": asset}
    )
    return account


def account_fees(*, asset: Asset) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        code=f"fees:{asset.code}", defaults={"kind": Kind.FEES, "asset": asset}
    )
    return account


def account_escrow(*, trade_id: int, asset: Asset) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        code=f"escrow:trade:{trade_id}", defaults={"kind": Kind.ESCROW, "asset": asset}
    )
    return account


# --- transfers (inside the caller's transaction) ----------------------------------------------


def _lock_accounts(*ids: int) -> dict[int, LedgerAccount]:
    # pk order, so two transfers over the same pair of accounts queue instead of deadlocking.
    rows = LedgerAccount.objects.select_for_update().filter(pk__in=sorted(set(ids))).order_by("pk")
    return {a.pk: a for a in rows}


def _save_balances(*accounts: LedgerAccount) -> None:
    for account in accounts:
        account.save(
            update_fields=["debits_pending", "debits_posted", "credits_pending", "credits_posted"]
        )


def _existing(idempotency_key: str, **expected: Any) -> Transfer | None:
    """The transfer already posted under this key, if it is the same transfer; else a conflict."""
    found = Transfer.objects.filter(idempotency_key=idempotency_key).first()
    if found is None:
        return None
    for field, value in expected.items():
        if getattr(found, field) != value:
            raise Conflict(
                f"Idempotency key {idempotency_key!r} was already used for a different transfer.",
                code="idempotency_conflict",
            )
    return found


def _assert_can_debit(account: LedgerAccount, amount: Decimal) -> None:
    if account.kind != Kind.WORLD and account.available < amount:
        raise InsufficientFunds(
            f"Insufficient {account.asset.code} balance: {fmt(account.available, account.asset.precision)} "
            f"available, {fmt(amount, account.asset.precision)} needed.",
            fields={"amount": ["Insufficient balance."]},
        )


def transfer_post(
    *,
    idempotency_key: str,
    debit: LedgerAccount,
    credit: LedgerAccount,
    amount: Decimal,
    kind: str,
    pending: bool = False,
    trade_id: int | None = None,
    memo: str = "",
) -> Transfer:
    """Move `amount` (or hold it, when pending) from debit to credit; posts once per key."""
    assert transaction.get_connection().in_atomic_block, "transfer_post needs a transaction"
    if debit.asset_id != credit.asset_id:
        raise Conflict("A transfer moves one asset: the two accounts differ.")
    if amount <= 0:
        raise Conflict("A transfer amount must be positive.")
    flags = Flags.PENDING if pending else Flags.SINGLE
    locked = _lock_accounts(debit.pk, credit.pk)
    if found := _existing(
        idempotency_key,
        debit_account_id=debit.pk,
        credit_account_id=credit.pk,
        amount=amount,
        flags=flags,
    ):
        return found
    dr, cr = locked[debit.pk], locked[credit.pk]
    _assert_can_debit(dr, amount)
    if pending:
        dr.debits_pending += amount
        cr.credits_pending += amount
    else:
        dr.debits_posted += amount
        cr.credits_posted += amount
    _save_balances(dr, cr)
    return Transfer.objects.create(
        idempotency_key=idempotency_key,
        asset_id=debit.asset_id,
        debit_account=dr,
        credit_account=cr,
        amount=amount,
        kind=kind,
        flags=flags,
        trade_id=trade_id,
        memo=memo,
    )


def _resolve(*, idempotency_key: str, pending: Transfer, post_amount: Decimal | None) -> Transfer:
    assert transaction.get_connection().in_atomic_block, "resolving a hold needs a transaction"
    flags = Flags.VOID_PENDING if post_amount is None else Flags.POST_PENDING
    locked = _lock_accounts(pending.debit_account_id, pending.credit_account_id)
    if found := _existing(idempotency_key, pending_id=pending.pk, flags=flags):
        return found
    if pending.flags != Flags.PENDING:
        raise InvalidTransition("Only a pending transfer can be posted or voided.")
    if Transfer.objects.filter(pending_id=pending.pk).exists():
        raise InvalidTransition(f"Hold #{pending.pk} was already resolved.")
    if post_amount is not None and not (0 < post_amount <= pending.amount):
        raise Conflict("A hold can be posted for at most its amount.")
    dr, cr = locked[pending.debit_account_id], locked[pending.credit_account_id]
    dr.debits_pending -= pending.amount
    cr.credits_pending -= pending.amount
    if post_amount is not None:
        dr.debits_posted += post_amount
        cr.credits_posted += post_amount
    _save_balances(dr, cr)
    return Transfer.objects.create(
        idempotency_key=idempotency_key,
        asset_id=pending.asset_id,
        debit_account=dr,
        credit_account=cr,
        amount=pending.amount if post_amount is None else post_amount,
        kind=pending.kind,
        flags=flags,
        pending=pending,
        trade_id=pending.trade_id,
    )


def transfer_post_pending(
    *, idempotency_key: str, pending: Transfer, amount: Decimal | None = None
) -> Transfer:
    """Post a hold, fully or in part (the rest goes back to the debit account); once only."""
    return _resolve(
        idempotency_key=idempotency_key, pending=pending, post_amount=amount or pending.amount
    )


def transfer_void_pending(*, idempotency_key: str, pending: Transfer) -> Transfer:
    """Release a hold entirely back to its debit account; once only."""
    return _resolve(idempotency_key=idempotency_key, pending=pending, post_amount=None)
