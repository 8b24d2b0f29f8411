"""Every write to transfers and balances. Nothing else in the project writes them.

transfer_* helpers run inside the caller's transaction (they lock the two accounts in pk order so
two transfers never deadlock); the public services (deposit, withdrawal, seal) own a durable one.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common.errors import Conflict, InsufficientFunds, InvalidTransition, NotFound, ValidationFailed
from common.money import fmt, parse_amount
from ledger import chain
from ledger.adapters import get_chain_adapter
from ledger.models import Deposit, LedgerAccount, Transfer, Withdrawal
from marketplace.models import Asset

logger = logging.getLogger(__name__)

Flags = Transfer.Flags
Kind = LedgerAccount.Kind

# pg_advisory_xact_lock key of the one sequencer ("LEDGER" in ASCII).
SEQUENCER_LOCK = 0x4C4544474552


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


# --- deposits and withdrawals -----------------------------------------------------------------


def _asset(code: str) -> Asset:
    try:
        return Asset.objects.get(code=code.upper(), is_active=True)
    except Asset.DoesNotExist:
        raise NotFound(
            f"asset: unknown asset {code!r}.", fields={"asset": ["Unknown asset."]}
        ) from None


def deposit_credit(
    *, user: Any, asset_code: str, amount: Any, reference: str, actor: Any
) -> Deposit:
    """Credit a confirmed deposit to the user's available balance (world -> user), once."""
    asset = _asset(asset_code)
    value = parse_amount(amount, precision=asset.precision, field="amount")
    with transaction.atomic(durable=True):
        deposit = Deposit.objects.create(
            user=user, asset=asset, amount=value, reference=reference, status=Deposit.Status.PENDING
        )
        return _deposit_credit_locked(deposit=deposit, actor=actor)


def deposit_confirm(*, deposit_id: int, actor: Any) -> Deposit:
    """A moderator confirms a pending deposit: it is credited exactly once."""
    with transaction.atomic(durable=True):
        deposit = (
            Deposit.objects.select_for_update().select_related("asset", "user").get(pk=deposit_id)
        )
        if deposit.status != Deposit.Status.PENDING:
            raise InvalidTransition(f"Deposit #{deposit.pk} is already {deposit.status}.")
        return _deposit_credit_locked(deposit=deposit, actor=actor)


def _deposit_credit_locked(*, deposit: Deposit, actor: Any) -> Deposit:
    deposit.transfer = transfer_post(
        idempotency_key=f"deposit:{deposit.pk}",
        debit=account_world(asset=deposit.asset),
        credit=account_for_user(user=deposit.user, asset=deposit.asset),
        amount=deposit.amount,
        kind=Transfer.Kind.DEPOSIT,
        memo=deposit.reference[:200],
    )
    deposit.status = Deposit.Status.CREDITED
    deposit.confirmed_by = actor
    deposit.save(update_fields=["transfer", "status", "confirmed_by"])
    return deposit


def withdrawal_request(*, user: Any, asset_code: str, amount: Any, address: str) -> Withdrawal:
    """Hold the amount at once (user -> world, pending); a worker hands it to the chain adapter."""
    asset = _asset(asset_code)
    value = parse_amount(amount, precision=asset.precision, field="amount")
    address = (address or "").strip()
    if not address:
        raise ValidationFailed(
            "address: a destination address is required.", fields={"address": ["Required."]}
        )
    get_chain_adapter().validate_address(asset=asset, address=address)
    with transaction.atomic(durable=True):
        withdrawal = Withdrawal.objects.create(
            user=user, asset=asset, amount=value, address=address
        )
        withdrawal.hold = transfer_post(
            idempotency_key=f"withdrawal:{withdrawal.pk}:hold",
            debit=account_for_user(user=user, asset=asset),
            credit=account_world(asset=asset),
            amount=value,
            kind=Transfer.Kind.WITHDRAWAL,
            pending=True,
        )
        withdrawal.save(update_fields=["hold"])
        transaction.on_commit(lambda: _queue_withdrawal(withdrawal.pk))
    return withdrawal


def _queue_withdrawal(withdrawal_id: int) -> None:
    from ledger.tasks import process_withdrawal

    process_withdrawal.delay(withdrawal_id)


def withdrawal_process(*, withdrawal_id: int) -> Withdrawal:
    """Hand a requested withdrawal to the chain adapter; post or void by its answer. Safe twice."""
    with transaction.atomic(durable=True):
        withdrawal = (
            Withdrawal.objects.select_for_update(of=("self",))
            .select_related("asset", "hold")
            .get(pk=withdrawal_id)
        )
        if withdrawal.status != Withdrawal.Status.REQUESTED:
            return withdrawal
        result = get_chain_adapter().submit_withdrawal(withdrawal=withdrawal)
        if result.status == "sent":
            _withdrawal_finish(withdrawal, completed=True, txid=result.txid)
        elif result.status == "failed":
            _withdrawal_finish(withdrawal, completed=False, reason=result.reason)
        else:
            withdrawal.status = Withdrawal.Status.SUBMITTED
            withdrawal.save(update_fields=["status", "updated_at"])
        return withdrawal


def withdrawal_confirm(*, withdrawal_id: int, txid: str, actor: Any) -> Withdrawal:
    """The adapter (or a moderator, for the manual adapter) confirms it was sent: post the hold."""
    return _withdrawal_decide(withdrawal_id=withdrawal_id, completed=True, txid=txid, reason="")


def withdrawal_reject(*, withdrawal_id: int, reason: str, actor: Any) -> Withdrawal:
    """Sending failed or was refused: void the hold back to the user's available balance."""
    return _withdrawal_decide(withdrawal_id=withdrawal_id, completed=False, txid="", reason=reason)


def _withdrawal_decide(
    *, withdrawal_id: int, completed: bool, txid: str, reason: str
) -> Withdrawal:
    with transaction.atomic(durable=True):
        withdrawal = (
            Withdrawal.objects.select_for_update(of=("self",))
            .select_related("hold")
            .get(pk=withdrawal_id)
        )
        if withdrawal.status not in (Withdrawal.Status.REQUESTED, Withdrawal.Status.SUBMITTED):
            raise InvalidTransition(f"Withdrawal #{withdrawal.pk} is already {withdrawal.status}.")
        _withdrawal_finish(withdrawal, completed=completed, txid=txid, reason=reason)
        return withdrawal


def _withdrawal_finish(
    withdrawal: Withdrawal, *, completed: bool, txid: str = "", reason: str = ""
) -> None:
    if completed:
        transfer_post_pending(
            idempotency_key=f"withdrawal:{withdrawal.pk}:post", pending=withdrawal.hold
        )
        withdrawal.status = Withdrawal.Status.COMPLETED
        withdrawal.txid = txid
    else:
        transfer_void_pending(
            idempotency_key=f"withdrawal:{withdrawal.pk}:void", pending=withdrawal.hold
        )
        withdrawal.status = Withdrawal.Status.FAILED
        withdrawal.failure_reason = reason[:200]
    withdrawal.save(update_fields=["status", "txid", "failure_reason", "updated_at"])


# --- the hash chain ---------------------------------------------------------------------------


def transfer_entry(transfer: Transfer, *, seq: int) -> dict[str, Any]:
    """The fields of a transfer that the chain hashes (see ledger.chain for the encoding)."""
    created = transfer.created_at.astimezone(dt.UTC)
    return {
        "v": chain.ENTRY_VERSION,
        "seq": seq,
        "id": transfer.pk,
        "key": transfer.idempotency_key,
        "kind": transfer.kind,
        "flags": transfer.flags,
        "asset": transfer.asset.code,
        "debit": transfer.debit_account.code,
        "credit": transfer.credit_account.code,
        "amount": fmt(transfer.amount, transfer.asset.precision),
        "pending_id": transfer.pending_id,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def ledger_seal_pending(*, batch_size: int | None = None) -> int:
    """Give committed, unsealed transfers the next seq and chain hash; one sequencer at a time."""
    batch_size = batch_size or settings.LEDGER_SEAL_BATCH
    sealed = 0
    while True:
        with transaction.atomic(durable=True):
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    # Only one sequencer: a second one waits here, then sees the first one's work.
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
            head = (
                Transfer.objects.filter(seq__isnull=False)
                .order_by("-seq")
                .values("seq", "hash")
                .first()
            )
            seq, prev_hash = (head["seq"], head["hash"]) if head else (0, chain.GENESIS_HASH)
            batch = list(
                Transfer.objects.filter(seq__isnull=True)
                .select_related("asset", "debit_account", "credit_account")
                .order_by("id")[:batch_size]
            )
            if not batch:
                return sealed
            now = timezone.now()
            for transfer in batch:
                seq += 1
                transfer.seq = seq
                transfer.prev_hash = prev_hash
                transfer.hash = chain.chain_hash(
                    prev_hash, chain.entry_bytes(transfer_entry(transfer, seq=seq))
                )
                transfer.sealed_at = now
                prev_hash = transfer.hash
            Transfer.objects.bulk_update(batch, ["seq", "prev_hash", "hash", "sealed_at"])
            sealed += len(batch)
        if len(batch) < batch_size:
            return sealed
