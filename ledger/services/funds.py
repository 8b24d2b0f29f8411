"""Deposits and withdrawals through the chain adapter; each one durable transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django.db import transaction
from django.utils.translation import gettext

from common.errors import InsufficientFunds, InvalidTransition, ValidationFailed
from common.money import fmt, parse_amount
from common.outbox import publish_after_commit
from common.transactions import durable_atomic
from ledger.adapters import get_chain_adapter
from ledger.models import Deposit, Transfer, Withdrawal
from ledger.selectors import asset_get
from ledger.services.transfers import (
    account_custody,
    account_fees,
    account_for_user,
    account_world,
    transfer_post,
    transfer_post_pending,
    transfer_void_pending,
)

# --- deposits and withdrawals -----------------------------------------------------------------

# Checks a higher layer adds before money leaves (accounts registers a freeze and the lock after
# a password change in its AppConfig.ready()): each is called with user= and raises an
# ApplicationError to refuse.
withdrawal_guards: list[Callable[..., None]] = []
# The person asking proves it is them (accounts registers its fund password: the 2FA code, or
# the account password without 2FA): the wallet form and the withdrawal API call
# withdrawal_owner_confirm with what they sent before withdrawal_request. Each is called with user=,
# otp= and password= and raises an ApplicationError to refuse.
withdrawal_confirmers: list[Callable[..., object]] = []
# Why a queued withdrawal must wait for a moderator instead of being sent (accounts registers a
# frozen account's reason): each is called with user= and returns a reason, or None.
withdrawal_hold_reasons: list[Callable[..., str | None]] = []


def deposit_credit(
    *, user: Any, asset_code: str, amount: Any, reference: str, actor: Any
) -> Deposit:
    """Credit a confirmed deposit to the user's available balance (world -> user), once."""
    asset = asset_get(code=asset_code)
    value = parse_amount(amount, precision=asset.precision, field="amount")
    with durable_atomic():
        deposit = Deposit.objects.create(
            user=user, asset=asset, amount=value, reference=reference, status=Deposit.Status.PENDING
        )
        return _deposit_credit_locked(deposit=deposit, actor=actor)


def deposit_confirm(*, deposit_id: int, actor: Any) -> Deposit:
    """A moderator confirms a pending deposit: it is credited exactly once."""
    with durable_atomic():
        deposit = (
            Deposit.objects.select_for_update().select_related("asset", "user").get(pk=deposit_id)
        )
        if deposit.status != Deposit.Status.PENDING:
            raise InvalidTransition(
                gettext("Deposit #{pk} is already {status}.").format(
                    pk=deposit.pk, status=deposit.status
                )
            )
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


def withdrawal_owner_confirm(
    *, user: Any, otp: str | None = None, password: str | None = None
) -> None:
    """The person asking for a withdrawal is the account's owner (the registered confirmers)."""
    for confirm in withdrawal_confirmers:
        confirm(user=user, otp=otp, password=password)


def withdrawal_request(
    *, user: Any, asset_code: str, amount: Any, address: str, max_fee: Any = None
) -> Withdrawal:
    """Hold the amount at once (user -> world, pending), and the adapter's network fee with it
    (user -> fees, pending); a worker hands it to the chain adapter. `max_fee`: the fee the
    person was shown; a higher one now is refused (they confirm again)."""
    asset = asset_get(code=asset_code)
    value = parse_amount(amount, precision=asset.precision, field="amount")
    address = (address or "").strip()
    if not address:
        raise ValidationFailed(
            gettext("address: a destination address is required."),
            fields={"address": [gettext("Required.")]},
        )
    adapter = get_chain_adapter(asset)
    address = adapter.normalize_address(asset=asset, address=address)
    fee = adapter.withdrawal_fee(asset=asset, amount=value)
    if max_fee not in (None, ""):
        shown = parse_amount(max_fee, precision=asset.precision, field="max_fee", allow_zero=True)
        if fee > shown:
            message = f"The network fee is now {fee} {asset.code}: confirm again."
            raise ValidationFailed(
                gettext("max_fee: {message}").format(message=message), fields={"max_fee": [message]}
            )
    for guard in withdrawal_guards:
        guard(user=user)
    with durable_atomic():
        withdrawal = Withdrawal.objects.create(
            user=user, asset=asset, amount=value, address=address, fee=fee
        )
        withdrawal.hold = transfer_post(
            idempotency_key=f"withdrawal:{withdrawal.pk}:hold",
            debit=account_for_user(user=user, asset=asset),
            credit=(
                account_custody(asset=asset, place=adapter.withdrawal_custody)
                if adapter.withdrawal_custody
                else account_world(asset=asset)
            ),
            amount=value,
            kind=Transfer.Kind.WITHDRAWAL,
            pending=True,
        )
        if fee > 0:
            withdrawal.fee_hold = _withdrawal_fee_hold(withdrawal, user=user)
        withdrawal.save(update_fields=["hold", "fee_hold"])
        transaction.on_commit(lambda: _queue_withdrawal(withdrawal.pk))
    return withdrawal


def _withdrawal_fee_hold(withdrawal: Withdrawal, *, user: Any) -> Transfer:
    asset = withdrawal.asset
    try:
        return transfer_post(
            idempotency_key=f"withdrawal:{withdrawal.pk}:fee",
            debit=account_for_user(user=user, asset=asset),
            credit=account_fees(asset=asset),
            amount=withdrawal.fee,
            kind=Transfer.Kind.WITHDRAWAL,
            pending=True,
            memo="network fee",
        )
    except InsufficientFunds:
        total = fmt(withdrawal.amount + withdrawal.fee, asset.precision)
        message = (
            f"The amount plus the network fee ({fmt(withdrawal.fee, asset.precision)} "
            f"{asset.code}) is {total} {asset.code}: more than you have available."
        )
        raise InsufficientFunds(
            gettext("amount: {message}").format(message=message),
            fields={"amount": [gettext("Insufficient balance.")]},
        ) from None


def _queue_withdrawal(withdrawal_id: int) -> None:
    # The row is committed: a broker that is down or hanging only delays it (sweep_withdrawals).
    from ledger.tasks import process_withdrawal

    publish_after_commit(process_withdrawal, withdrawal_id)


def withdrawal_process(*, withdrawal_id: int) -> Withdrawal:
    """Hand a requested withdrawal to the chain adapter; post or void by its answer. Safe twice."""
    with durable_atomic():
        withdrawal = (
            Withdrawal.objects.select_for_update(of=("self",))
            .select_related("asset", "hold", "fee_hold")
            .get(pk=withdrawal_id)
        )
        if withdrawal.status != Withdrawal.Status.REQUESTED:
            return withdrawal
        held = next(
            (r for check in withdrawal_hold_reasons if (r := check(user=withdrawal.user))), None
        )
        if held:
            # Nothing leaves a frozen account: the hold stays, a moderator releases or rejects it.
            withdrawal.status = Withdrawal.Status.HELD
            withdrawal.failure_reason = held[:200]
            withdrawal.save(update_fields=["status", "failure_reason", "updated_at"])
            return withdrawal
        result = get_chain_adapter(withdrawal.asset).submit_withdrawal(withdrawal=withdrawal)
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


def withdrawal_release_hold(*, withdrawal_id: int, actor: Any) -> Withdrawal:
    """A moderator lets a held withdrawal go on (the account was cleared): it is queued again,
    and held again if its account is still frozen."""
    with durable_atomic():
        withdrawal = Withdrawal.objects.select_for_update().get(pk=withdrawal_id)
        if withdrawal.status != Withdrawal.Status.HELD:
            raise InvalidTransition(
                gettext("Withdrawal #{pk} is not held ({status}).").format(
                    pk=withdrawal.pk, status=withdrawal.status
                )
            )
        withdrawal.status = Withdrawal.Status.REQUESTED
        withdrawal.failure_reason = ""
        withdrawal.save(update_fields=["status", "failure_reason", "updated_at"])
        pk = withdrawal.pk
        transaction.on_commit(lambda: _queue_withdrawal(pk))
    return withdrawal


def _withdrawal_decide(
    *, withdrawal_id: int, completed: bool, txid: str, reason: str
) -> Withdrawal:
    with durable_atomic():
        withdrawal = (
            Withdrawal.objects.select_for_update(of=("self",))
            .select_related("hold", "fee_hold")
            .get(pk=withdrawal_id)
        )
        allowed = [Withdrawal.Status.REQUESTED, Withdrawal.Status.SUBMITTED]
        if not completed:
            allowed.append(Withdrawal.Status.HELD)  # a held one is rejected, never sent from here
        if withdrawal.status not in allowed:
            raise InvalidTransition(
                gettext("Withdrawal #{pk} is already {status}.").format(
                    pk=withdrawal.pk, status=withdrawal.status
                )
            )
        _withdrawal_finish(withdrawal, completed=completed, txid=txid, reason=reason)
        return withdrawal


def _withdrawal_finish(
    withdrawal: Withdrawal, *, completed: bool, txid: str = "", reason: str = ""
) -> None:
    if completed:
        transfer_post_pending(
            idempotency_key=f"withdrawal:{withdrawal.pk}:post",
            pending=cast(Transfer, withdrawal.hold),
        )
        if withdrawal.fee_hold_id:
            transfer_post_pending(
                idempotency_key=f"withdrawal:{withdrawal.pk}:fee:post",
                pending=cast(Transfer, withdrawal.fee_hold),
            )
        withdrawal.status = Withdrawal.Status.COMPLETED
        withdrawal.txid = txid
    else:
        transfer_void_pending(
            idempotency_key=f"withdrawal:{withdrawal.pk}:void",
            pending=cast(Transfer, withdrawal.hold),
        )
        if withdrawal.fee_hold_id:
            transfer_void_pending(
                idempotency_key=f"withdrawal:{withdrawal.pk}:fee:void",
                pending=cast(Transfer, withdrawal.fee_hold),
            )
        withdrawal.status = Withdrawal.Status.FAILED
        withdrawal.failure_reason = reason[:200]
    withdrawal.save(update_fields=["status", "txid", "failure_reason", "updated_at"])
