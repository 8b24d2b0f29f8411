"""Loan requests: creation with the collateral held, funding by lenders, activation, cancellation
and expiry. Each service is one durable transaction; the request row is locked before any
ledger account, so racing lenders queue on it and can never overfund."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from common.errors import (
    ApplicationError,
    Conflict,
    InsufficientFunds,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from common.money import fmt, parse_amount, round_down
from common.transactions import durable_atomic
from ledger import services as ledger
from ledger.models import Transfer
from ledger.selectors import asset_get
from lending.models import Installment, Loan, LoanCommitment, LoanRequest
from lending.services.pricing import pair_price
from lending.services.schedule import loan_schedule
from lending.services.transitions import (
    BORROWER,
    SYSTEM,
    _request_transition,
    event,
    request_role,
)

logger = logging.getLogger(__name__)

K = Transfer.Kind
MAX_FUNDING_DAYS = 30  # how far ahead a funding deadline may lie
RATE_PRECISION = 4


def collateral_account(request_id: int, asset: Any) -> Any:
    return ledger.account_hold(code=f"loan:collateral:{request_id}", asset=asset)


def funding_account(request_id: int, asset: Any) -> Any:
    return ledger.account_hold(code=f"loan:funding:{request_id}", asset=asset)


def _parse_term(value: object) -> int:
    text = (
        str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    )
    if not text.isdigit() or not 1 <= int(text) <= 24:
        raise ValidationFailed.for_field(
            "term_months", gettext("A whole number of months from 1 to 24.")
        )
    return int(text)


def _parse_rate(value: object) -> Decimal:
    rate = parse_amount(value, precision=RATE_PRECISION, field="annual_rate")
    if rate > 100:
        raise ValidationFailed.for_field("annual_rate", gettext("At most 100 (percent per year)."))
    return rate


def _parse_deadline(value: object, now: datetime) -> datetime:
    if isinstance(value, str):
        from django.utils.dateparse import parse_datetime

        value = parse_datetime(value)
    if not isinstance(value, datetime) or timezone.is_naive(value):
        raise ValidationFailed.for_field(
            "funding_deadline", gettext("A date and time with its time zone (ISO 8601).")
        )
    if value <= now:
        raise ValidationFailed.for_field("funding_deadline", gettext("Must be in the future."))
    if value > now + timedelta(days=MAX_FUNDING_DAYS):
        raise ValidationFailed.for_field(
            "funding_deadline",
            gettext("At most {MAX_FUNDING_DAYS} days ahead.").format(
                MAX_FUNDING_DAYS=MAX_FUNDING_DAYS
            ),
        )
    return value


def loan_ltv_quote(
    *, asset: Any, collateral_asset: Any, principal: Decimal, annual_rate: Decimal,
    term_months: int, plan: str, collateral_amount: Decimal,
) -> tuple[Decimal, Decimal]:  # fmt: skip
    """(LTV, collateral needed for LENDING_INITIAL_LTV) of a would-be loan at today's index."""
    rows = loan_schedule(
        principal=principal, annual_rate=annual_rate, term_months=term_months, plan=plan,
        precision=asset.precision, start=timezone.now(),
    )  # fmt: skip
    debt = principal + sum((r.interest for r in rows), Decimal(0))
    price = pair_price(asset_id=asset.pk, collateral_asset_id=collateral_asset.pk)
    if price.is_stale():
        raise Conflict(
            gettext("The price index is stale: no loan can be valued now; try again later."),
            code="stale_price",
        )
    needed = price.collateral_for(debt) / settings.LENDING_INITIAL_LTV
    needed = -round_down(-needed, collateral_asset.precision)  # rounded up
    return price.ltv(debt=debt, collateral=collateral_amount), needed


def loan_request_create(
    *,
    borrower: Any,
    asset: Any,
    amount: Any,
    annual_rate: Any,
    term_months: Any,
    plan: Any,
    collateral_asset: Any,
    collateral_amount: Any,
    funding_deadline: Any,
    allow_partial: bool = False,
    min_fill: Any = None,
) -> LoanRequest:
    """A request whose collateral is held and meets LENDING_INITIAL_LTV, or a clear error."""
    now = timezone.now()
    loan_asset = asset_get(code=asset)
    try:
        coll_asset = asset_get(code=collateral_asset)
    except ValidationFailed:
        raise ValidationFailed.for_field("collateral_asset", gettext("Unknown asset.")) from None
    if coll_asset.pk == loan_asset.pk:
        raise ValidationFailed.for_field(
            "collateral_asset", gettext("Must differ from the asset borrowed.")
        )
    principal = parse_amount(amount, precision=loan_asset.precision, field="amount")
    rate = _parse_rate(annual_rate)
    term = _parse_term(term_months)
    if plan not in LoanRequest.Plan.values:
        raise ValidationFailed.for_field(
            "plan", gettext("One of {v1}.").format(v1=", ".join(LoanRequest.Plan.values))
        )
    collateral = parse_amount(
        collateral_amount, precision=coll_asset.precision, field="collateral_amount"
    )
    deadline = _parse_deadline(funding_deadline, now)
    fill: Decimal | None = None
    if allow_partial:
        if min_fill in (None, ""):
            raise ValidationFailed.for_field(
                "min_fill", gettext("Required when a partial fill is acceptable.")
            )
        fill = parse_amount(min_fill, precision=loan_asset.precision, field="min_fill")
        if fill > principal:
            raise ValidationFailed.for_field("min_fill", gettext("At most the amount requested."))
    elif min_fill not in (None, ""):
        raise ValidationFailed.for_field("min_fill", gettext("Only with allow_partial."))
    ltv, needed = loan_ltv_quote(
        asset=loan_asset, collateral_asset=coll_asset, principal=principal, annual_rate=rate,
        term_months=term, plan=plan, collateral_amount=collateral,
    )  # fmt: skip
    if ltv > settings.LENDING_INITIAL_LTV:
        raise ValidationFailed.for_field(
            "collateral_amount",
            gettext(
                "LTV {ltv:.4f} is above {LENDING_INITIAL_LTV}: at least {v1} {code} is needed."
            ).format(
                ltv=ltv,
                LENDING_INITIAL_LTV=settings.LENDING_INITIAL_LTV,
                v1=fmt(needed, coll_asset.precision),
                code=coll_asset.code,
            ),
        )
    with durable_atomic():
        return _insert_request(
            borrower=borrower, asset=loan_asset, amount=principal, annual_rate=rate,
            term_months=term, plan=plan, collateral_asset=coll_asset,
            collateral_amount=collateral, funding_deadline=deadline,
            allow_partial=bool(allow_partial), min_fill=fill, reason=f"LTV {ltv:.4f}",
        )  # fmt: skip


def _insert_request(*, borrower: Any, reason: str, **fields: Any) -> LoanRequest:
    """Create a checked request and hold its collateral, in the caller's transaction."""
    request = LoanRequest.objects.create(borrower=borrower, **fields)
    coll_asset, collateral = request.collateral_asset, request.collateral_amount
    try:
        request.collateral_hold = ledger.transfer_post(
            idempotency_key=f"loan:{request.pk}:collateral",
            debit=ledger.account_for_user(user=borrower, asset=coll_asset),
            credit=collateral_account(request.pk, coll_asset),
            amount=collateral,
            kind=K.LOAN_COLLATERAL,
            pending=True,
            reference=request.pk,
        )
    except InsufficientFunds as exc:
        raise InsufficientFunds(
            exc.message, fields={"collateral_amount": [gettext("Insufficient balance.")]}
        ) from None
    request.save(update_fields=["collateral_hold"])
    event(
        request_id=request.pk, subject="request", old="", new=request.state,
        actor=borrower, role=BORROWER, reason=reason,
    )  # fmt: skip
    return request


def _lock_request(request_id: int) -> LoanRequest:
    try:
        return (
            LoanRequest.objects.select_for_update()
            .select_related("asset", "collateral_asset")
            .get(pk=request_id)
        )
    except LoanRequest.DoesNotExist:
        raise NotFound(
            gettext("Loan request #{request_id} not found.").format(request_id=request_id),
            fields={"request": [gettext("Not found.")]},
        ) from None


def loan_request_fund(*, request_id: int, lender: Any, amount: Any) -> LoanCommitment:
    """Hold a lender's part (at most what is left); the last part activates the loan."""
    with durable_atomic():
        # The request row is the queue: racing lenders see each other's `funded` in turn.
        request = _lock_request(request_id)
        value = parse_amount(amount, precision=request.asset.precision, field="amount")
        if lender.pk == request.borrower_id:
            raise PermissionDenied(
                gettext("You can't fund your own loan request."),
                fields={"request": [gettext("This is your own request.")]},
            )
        if request.state != LoanRequest.State.OPEN:
            raise Conflict(
                gettext("Loan request #{pk} is {state}: it takes no more funding.").format(
                    pk=request.pk, state=request.get_state_display()
                ),
                code="invalid_transition",
                fields={"state": [request.state]},
            )
        if timezone.now() >= request.funding_deadline:
            raise Conflict(
                gettext("The funding deadline has passed."),
                fields={"funding_deadline": [gettext("Passed.")]},
            )
        left = request.remaining
        if value > left:
            raise ValidationFailed(
                gettext("amount: only {v1} {code} is left.").format(
                    v1=fmt(left, request.asset.precision), code=request.asset.code
                ),
                fields={
                    "amount": [
                        gettext("At most {v1}.").format(v1=fmt(left, request.asset.precision))
                    ]
                },
            )
        mine = LoanCommitment.objects.filter(request=request, lender=lender).select_related("hold")
        existing = mine.select_for_update(of=("self",)).first()
        if existing is not None:
            return _commit_more(request, existing, value)
        commitment = _commit(request, lender, value)
    return commitment


def _commit(request: LoanRequest, lender: Any, value: Decimal) -> LoanCommitment:
    """Hold a checked part from the lender (the request locked by the caller); the last part
    activates the loan."""
    commitment = LoanCommitment.objects.create(request=request, lender=lender, amount=value)
    commitment.hold = ledger.transfer_post(
        idempotency_key=f"loan:{request.pk}:fund:{commitment.pk}",
        debit=ledger.account_for_user(user=lender, asset=request.asset),
        credit=funding_account(request.pk, request.asset),
        amount=value,
        kind=K.LOAN_FUNDING,
        pending=True,
        reference=request.pk,
    )
    commitment.save(update_fields=["hold"])
    request.funded += value
    if request.funded == request.amount:
        _activate(request, actor=lender, role="lender", reason=gettext_noop("fully funded"))
    else:
        request.save(update_fields=["funded", "updated_at"])
    return commitment


def _commit_more(
    request: LoanRequest, commitment: LoanCommitment, value: Decimal
) -> LoanCommitment:
    """A lender adds to their commitment: its hold is released and the new total held again (the
    next hold_seq), in the same transaction, so their share stays one number and one hold."""
    old = commitment.hold
    assert old is not None
    commitment.hold_seq += 1
    seq = commitment.hold_seq
    ledger.transfer_void_pending(
        idempotency_key=f"loan:{request.pk}:fund:{commitment.pk}:{seq}:release", pending=old
    )
    commitment.amount += value
    commitment.hold = ledger.transfer_post(
        idempotency_key=f"loan:{request.pk}:fund:{commitment.pk}:{seq}",
        debit=ledger.account_for_user(user=commitment.lender, asset=request.asset),
        credit=funding_account(request.pk, request.asset),
        amount=commitment.amount,
        kind=K.LOAN_FUNDING,
        pending=True,
        reference=request.pk,
    )
    commitment.save(update_fields=["amount", "hold", "hold_seq"])
    request.funded += value
    if request.funded == request.amount:
        _activate(
            request, actor=commitment.lender, role="lender", reason=gettext_noop("fully funded")
        )
    else:
        request.save(update_fields=["funded", "updated_at"])
    return commitment


def _activate(request: LoanRequest, *, actor: Any, role: str, reason: str) -> Loan:
    """Post every hold, pay the principal to the borrower and fix the schedule."""
    now = timezone.now()
    _request_transition(request=request, to=LoanRequest.State.ACTIVE, actor=actor, role=role,
                        reason=reason)  # fmt: skip
    for c in LoanCommitment.objects.filter(request=request).select_related("hold"):
        assert c.hold is not None
        ledger.transfer_post_pending(idempotency_key=f"loan:{request.pk}:fund:{c.pk}:post",
                                     pending=c.hold)  # fmt: skip
    ledger.transfer_post(
        idempotency_key=f"loan:{request.pk}:disburse",
        debit=funding_account(request.pk, request.asset),
        credit=ledger.account_for_user(user=request.borrower, asset=request.asset),
        amount=request.funded,
        kind=K.LOAN_FUNDING,
        reference=request.pk,
    )
    assert request.collateral_hold is not None
    ledger.transfer_post_pending(
        idempotency_key=f"loan:{request.pk}:collateral:post", pending=request.collateral_hold
    )
    loan = Loan.objects.create(
        request=request, borrower_id=request.borrower_id, asset=request.asset,
        collateral_asset=request.collateral_asset, principal=request.funded,
        collateral_amount=request.collateral_amount, annual_rate=request.annual_rate,
        term_months=request.term_months, plan=request.plan, activated_at=now,
        interest_fee=settings.LENDING_INTEREST_FEE,
    )  # fmt: skip
    Installment.objects.bulk_create(
        Installment(loan=loan, n=r.n, due_at=r.due_at, principal=r.principal, interest=r.interest)
        for r in loan_schedule(
            principal=loan.principal, annual_rate=loan.annual_rate, term_months=loan.term_months,
            plan=loan.plan, precision=request.asset.precision, start=now,
        )
    )  # fmt: skip
    event(request_id=request.pk, subject="loan", old="", new=loan.state, actor=actor, role=role,
          reason=f"principal {fmt(loan.principal, request.asset.precision)}")  # fmt: skip
    return loan


def _void_all(request: LoanRequest) -> None:
    for c in LoanCommitment.objects.filter(request=request).select_related("hold"):
        assert c.hold is not None
        ledger.transfer_void_pending(idempotency_key=f"loan:{request.pk}:fund:{c.pk}:void",
                                     pending=c.hold)  # fmt: skip
    assert request.collateral_hold is not None
    ledger.transfer_void_pending(
        idempotency_key=f"loan:{request.pk}:collateral:void", pending=request.collateral_hold
    )


def loan_request_cancel(*, request_id: int, actor: Any, reason: str = "") -> LoanRequest:
    """The borrower withdraws an open request: every hold goes back."""
    with durable_atomic():
        request = _lock_request(request_id)
        role = request_role(request, actor)
        _request_transition(request=request, to=LoanRequest.State.CANCELLED, actor=actor,
                            role=role, reason=reason or "cancelled by the borrower")  # fmt: skip
        _void_all(request)
    return request


def loan_request_close_due(*, request_id: int) -> LoanRequest:
    """At the deadline: activate a partial fill that reached its minimum, else expire."""
    with durable_atomic():
        request = _lock_request(request_id)
        if request.state != LoanRequest.State.OPEN or timezone.now() < request.funding_deadline:
            return request  # another sweeper or the last lender got here first
        if request.allow_partial and request.min_fill and request.funded >= request.min_fill:
            _activate(
                request,
                actor=None,
                role=SYSTEM,
                reason=gettext_noop("deadline reached with min_fill"),
            )
        else:
            _request_transition(request=request, to=LoanRequest.State.EXPIRED, actor=None,
                                role=SYSTEM, reason=gettext_noop("funding deadline passed"))  # fmt: skip
            _void_all(request)
    return request


def loan_requests_sweep() -> int:
    """Beat: close every open request whose deadline has passed, each in its own transaction."""
    done = 0
    due = LoanRequest.objects.filter(
        state=LoanRequest.State.OPEN, funding_deadline__lte=timezone.now()
    ).values_list("pk", flat=True)
    for pk in list(due.order_by("pk")[:500]):
        try:
            loan_request_close_due(request_id=pk)
            done += 1
        except ApplicationError:
            logger.exception("loan request #%s could not be closed", pk)
    return done


def funded_total(request_id: int) -> Decimal:
    return LoanCommitment.objects.filter(request_id=request_id).aggregate(s=Sum("amount"))[
        "s"
    ] or Decimal(0)
