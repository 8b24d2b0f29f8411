"""Installment collection: every due installment taken from the borrower's wallet and paid to
the lenders pro rata; a wallet that can't cover one makes the loan late."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from common.errors import ApplicationError, InsufficientFunds
from common.money import fmt
from common.transactions import durable_atomic
from ledger import services as ledger
from lending.models import Installment
from lending.services.loans import (
    OPEN_STATES,
    UNPAID,
    K,
    L,
    S,
    _lenders,
    _lock_loan,
    _pay,
    _return_collateral,
)
from lending.services.schedule import lender_shares
from lending.services.transitions import (
    SYSTEM,
    _loan_transition,
    event,
)

logger = logging.getLogger(__name__)


# --- installments --------------------------------------------------------------------------


def loan_collect(*, loan_id: int) -> int:
    """Collect every installment of one loan that is due, in order, from the borrower's wallet;
    the first that the wallet can't cover makes the loan late. Returns how many were paid."""
    now = timezone.now()
    paid = 0
    with durable_atomic():
        loan = _lock_loan(loan_id)
        if loan.state not in OPEN_STATES:
            return 0
        rows = list(loan.installments.order_by("n"))
        lenders = _lenders(loan)
        weights = [amount for _, amount in lenders]
        prec = loan.asset.precision
        principals = [r.principal for r in rows]
        interests = [r.interest for r in rows]
        wallet = ledger.account_for_user(user=loan.borrower, asset=loan.asset)
        for inst in rows:
            if inst.status not in UNPAID or inst.due_at > now:
                continue
            p = lender_shares(parts=principals, n=inst.n, weights=weights, precision=prec)
            i = lender_shares(parts=interests, n=inst.n, weights=weights, precision=prec)
            try:
                with transaction.atomic():  # a savepoint: a short wallet undoes this one only
                    for (lender_id, _), pp, ii in zip(lenders, p, i, strict=True):
                        _pay(loan=loan, key=f"loan:{loan.pk}:inst:{inst.n}:lender:{lender_id}",
                             lender_id=lender_id, amount=pp + ii, kind=K.LOAN_INSTALLMENT,
                             source=wallet)  # fmt: skip
            except InsufficientFunds:
                if inst.status != S.MISSED:
                    inst.status = S.MISSED
                    inst.save(update_fields=["status"])
                if loan.state == L.ACTIVE:
                    _loan_transition(loan=loan, to=L.LATE, actor=None, role=SYSTEM,
                                     reason=f"installment {inst.n} not covered")  # fmt: skip
                break
            inst.status, inst.paid_at = S.PAID, now
            inst.save(update_fields=["status", "paid_at"])
            paid += 1
            event(request_id=loan.pk, subject="loan", old=loan.state, new=loan.state, actor=None,
                  role=SYSTEM, reason=f"installment {inst.n} paid: {fmt(inst.total, prec)}")  # fmt: skip
        else:
            if all(r.status == S.PAID for r in rows):
                _return_collateral(
                    loan, loan.collateral_amount, f"loan:{loan.pk}:collateral:return"
                )
                _loan_transition(loan=loan, to=L.REPAID, actor=None, role=SYSTEM,
                                 reason="last installment paid")  # fmt: skip
            elif loan.state == L.LATE:
                _loan_transition(loan=loan, to=L.ACTIVE, actor=None, role=SYSTEM,
                                 reason="overdue installments collected")  # fmt: skip
    return paid


def installments_collect_due() -> int:
    """Beat: collect what is due on every open loan, one loan per transaction."""
    ids = (
        Installment.objects.filter(
            status__in=UNPAID, due_at__lte=timezone.now(), loan__state__in=OPEN_STATES
        )
        .values_list("loan_id", flat=True)
        .distinct()
        .order_by("loan_id")
    )
    total = 0
    for loan_id in list(ids):
        try:
            total += loan_collect(loan_id=loan_id)
        except ApplicationError:
            logger.exception("loan #%s: collection failed", loan_id)
    return total
