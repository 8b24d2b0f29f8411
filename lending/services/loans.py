"""Active loans: what is owed, early repayment, top-ups, and the helpers collection.py and
risk.py share. The loan row is locked before any ledger account; every transfer carries the
loan's id as its reference and a key that posts it once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext

from common.errors import InvalidTransition, NotFound
from common.money import fmt, parse_amount, round_down
from common.transactions import durable_atomic
from ledger import services as ledger
from ledger.models import Transfer
from lending.models import Installment, Loan, LoanCommitment
from lending.services.requests import collateral_account
from lending.services.schedule import split_pro_rata
from lending.services.transitions import (
    BORROWER,
    _loan_transition,
    event,
    loan_role,
)

logger = logging.getLogger(__name__)

K = Transfer.Kind
L = Loan.State
S = Installment.Status
OPEN_STATES = (L.ACTIVE, L.LATE)
UNPAID = (S.DUE, S.MISSED)


def _lock_loan(loan_id: int) -> Loan:
    try:
        return (
            Loan.objects.select_for_update(of=("self",))
            .select_related("asset", "collateral_asset", "borrower")
            .get(pk=loan_id)
        )
    except Loan.DoesNotExist:
        raise NotFound(
            gettext("Loan #{loan_id} not found.").format(loan_id=loan_id),
            fields={"loan": [gettext("Not found.")]},
        ) from None


def _lenders(loan: Loan) -> list[tuple[int, Decimal]]:
    """(lender id, commitment) in commitment order: the last one absorbs every rounding."""
    return list(
        LoanCommitment.objects.filter(request_id=loan.pk)
        .order_by("pk")
        .values_list("lender_id", "amount")
    )


def _pay(*, loan: Loan, key: str, lender_id: int, amount: Decimal, kind: str, source: Any) -> None:
    if amount <= 0:
        return
    from django.contrib.auth import get_user_model

    lender = get_user_model()(pk=lender_id)
    asset = loan.asset if kind == K.LOAN_INSTALLMENT else loan.collateral_asset
    ledger.transfer_post(
        idempotency_key=key,
        debit=source,
        credit=ledger.account_for_user(user=lender, asset=asset),
        amount=amount,
        kind=kind,
        reference=loan.pk,
    )


def fee_on_interest(interest: Decimal, fee: Decimal, precision: int) -> Decimal:
    """The platform's part of one lender's interest: interest * fee rounded down to the asset's
    precision; the lender gets the rest (the borrower pays the same either way)."""
    if fee <= 0 or interest <= 0:
        return Decimal(0)
    with localcontext() as ctx:
        ctx.prec = 60
        return round_down(interest * fee, precision)


def _pay_fee(*, loan: Loan, key: str, amount: Decimal, source: Any) -> None:
    """The fee parts of one payment, in one transfer to the platform's fee account; counted in
    loan.fees (the caller saves it)."""
    if amount <= 0:
        return
    ledger.transfer_post(
        idempotency_key=key,
        debit=source,
        credit=ledger.account_fees(asset=loan.asset),
        amount=amount,
        kind=K.LOAN_FEE,
        reference=loan.pk,
    )
    loan.fees += amount


def _return_collateral(loan: Loan, amount: Decimal, key: str) -> None:
    if amount > 0:
        ledger.transfer_post(
            idempotency_key=key,
            debit=collateral_account(loan.pk, loan.collateral_asset),
            credit=ledger.account_for_user(user=loan.borrower, asset=loan.collateral_asset),
            amount=amount,
            kind=K.LOAN_COLLATERAL,
            reference=loan.pk,
        )
    loan.collateral_amount -= amount


# --- what is owed --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payoff:
    principal: Decimal  # outstanding principal
    interest: Decimal  # accrued since the last paid installment's due date, actual/365
    days: int
    per_lender: list[tuple[int, Decimal, Decimal]]  # (lender id, principal, interest)

    @property
    def total(self) -> Decimal:
        return self.principal + self.interest


def loan_payoff_quote(loan: Loan, *, now: datetime | None = None) -> Payoff:
    """What closing the loan costs now: outstanding principal plus interest accrued on it since
    the last paid installment fell due (or activation), actual/365 over whole days, rounded
    down; each lender's part of each (principal exactly what the schedule still owes them)."""
    return payoff_of(
        loan,
        installments=list(loan.installments.order_by("n")),
        lenders=_lenders(loan),
        now=now or timezone.now(),
    )


def payoff_of(
    loan: Loan,
    *,
    installments: list[Installment],
    lenders: list[tuple[int, Decimal]],
    now: datetime,
) -> Payoff:
    """loan_payoff_quote's arithmetic over the loan's installments and (lender, commitment)
    rows as the caller read them (a batch of liquidations reads them for many loans at once)."""
    paid = [r for r in installments if r.status == S.PAID]
    weights = [a for _, a in lenders]
    prec = loan.asset.precision
    paid_principal = sum((r.principal for r in paid), Decimal(0))
    already = split_pro_rata(amount=paid_principal, weights=weights, precision=prec)
    outstanding = loan.principal - paid_principal
    since = max((r.due_at for r in paid), default=loan.activated_at)
    days = max((now - since).days, 0)
    with localcontext() as ctx:
        ctx.prec = 60
        interest = round_down(outstanding * loan.annual_rate / 100 * days / 365, prec)
    shares = split_pro_rata(amount=interest, weights=weights, precision=prec)
    per_lender = [
        (lender_id, amount - got, share)
        for (lender_id, amount), got, share in zip(lenders, already, shares, strict=True)
    ]
    return Payoff(outstanding, interest, days, per_lender)


def loan_scheduled_debt(loan: Loan) -> Decimal:
    """Principal plus interest of the installments still unpaid: the LTV's numerator."""
    return sum(
        (r.principal + r.interest for r in loan.installments.filter(status__in=UNPAID)),
        Decimal(0),
    )


def _close_installments(loan: Loan) -> None:
    loan.installments.filter(status__in=UNPAID).update(status=S.CLOSED)


def loan_repay_early(*, loan_id: int, actor: Any) -> Loan:
    """The borrower pays outstanding principal plus accrued interest; the collateral returns.
    Of each lender's interest the loan's interest_fee goes to the platform's fee account."""
    with durable_atomic():
        loan = _lock_loan(loan_id)
        role = loan_role(loan, actor, {lid for lid, _ in _lenders(loan)})
        if role != BORROWER:
            from common.errors import PermissionDenied

            raise PermissionDenied(gettext("Only the borrower can repay the loan."))
        if loan.state not in OPEN_STATES:
            raise InvalidTransition(gettext("Loan #{pk} is {state}: nothing to repay.").format(pk=loan.pk, state=loan.get_state_display()),
                                    fields={"state": [loan.state]})  # fmt: skip
        quote = loan_payoff_quote(loan)
        wallet = ledger.account_for_user(user=loan.borrower, asset=loan.asset)
        prec = loan.asset.precision
        fees = Decimal(0)
        for lender_id, principal, interest in quote.per_lender:
            fee = fee_on_interest(interest, loan.interest_fee, prec)
            fees += fee
            _pay(loan=loan, key=f"loan:{loan.pk}:repay:lender:{lender_id}", lender_id=lender_id,
                 amount=principal + interest - fee, kind=K.LOAN_INSTALLMENT,
                 source=wallet)  # fmt: skip
        _pay_fee(loan=loan, key=f"loan:{loan.pk}:repay:fee", amount=fees, source=wallet)
        if fees:
            loan.save(update_fields=["fees", "updated_at"])
        _close_installments(loan)
        _return_collateral(loan, loan.collateral_amount, f"loan:{loan.pk}:collateral:return")
        _loan_transition(loan=loan, to=L.REPAID, actor=actor, role=BORROWER,
                         reason=f"repaid early: {fmt(quote.principal, prec)} principal + "
                                f"{fmt(quote.interest, prec)} interest ({quote.days} days)")  # fmt: skip
    return loan


def loan_add_collateral(*, loan_id: int, actor: Any, amount: Any) -> Loan:
    """The borrower adds collateral to an open loan (answering a margin call)."""
    with durable_atomic():
        loan = _lock_loan(loan_id)
        role = loan_role(loan, actor, {lid for lid, _ in _lenders(loan)})
        if role != BORROWER:
            from common.errors import PermissionDenied

            raise PermissionDenied(gettext("Only the borrower can add collateral."))
        value = parse_amount(amount, precision=loan.collateral_asset.precision, field="amount")
        if loan.state not in OPEN_STATES:
            raise InvalidTransition(gettext("Loan #{pk} is {state}: it takes no collateral.").format(pk=loan.pk, state=loan.get_state_display()),
                                    fields={"state": [loan.state]})  # fmt: skip
        row = event(request_id=loan.pk, subject="loan", old=loan.state, new=loan.state,
                    actor=actor, role=BORROWER,
                    reason=f"collateral added: {fmt(value, loan.collateral_asset.precision)}")  # fmt: skip
        ledger.transfer_post(
            idempotency_key=f"loan:{loan.pk}:collateral:add:{row.pk}",
            debit=ledger.account_for_user(user=actor, asset=loan.collateral_asset),
            credit=collateral_account(loan.pk, loan.collateral_asset),
            amount=value,
            kind=K.LOAN_COLLATERAL,
            reference=loan.pk,
        )
        loan.collateral_amount += value
        loan.save(update_fields=["collateral_amount", "updated_at"])
    return loan
