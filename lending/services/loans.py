"""Active loans: installment collection, early repayment, top-ups, the LTV check, default and
liquidation. The loan row is locked before any ledger account; every transfer carries the
loan's id as its reference and a key that posts it once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common.errors import ApplicationError, Conflict, InsufficientFunds, InvalidTransition, NotFound
from common.money import fmt, parse_amount, round_down
from common.transactions import durable_atomic
from ledger import services as ledger
from ledger.models import Transfer
from lending.models import Installment, Loan, LoanCommitment, LoanEvent
from lending.services.controls import liquidations_paused
from lending.services.pricing import LTV_FIATS, pair_price
from lending.services.requests import collateral_account
from lending.services.schedule import lender_shares, split_pro_rata
from lending.services.transitions import (
    BORROWER,
    SYSTEM,
    _loan_transition,
    announce,
    announce_liquidation_blocked,
    announce_margin_call,
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
        raise NotFound(f"Loan #{loan_id} not found.", fields={"loan": ["Not found."]}) from None


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
    now = now or timezone.now()
    rows = list(loan.installments.order_by("n"))
    paid = [r for r in rows if r.status == S.PAID]
    lenders = _lenders(loan)
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
    """The borrower pays outstanding principal plus accrued interest; the collateral returns."""
    with durable_atomic():
        loan = _lock_loan(loan_id)
        role = loan_role(loan, actor, {lid for lid, _ in _lenders(loan)})
        if role != BORROWER:
            from common.errors import PermissionDenied

            raise PermissionDenied("Only the borrower can repay the loan.")
        if loan.state not in OPEN_STATES:
            raise InvalidTransition(f"Loan #{loan.pk} is {loan.state}: nothing to repay.",
                                    fields={"state": [loan.state]})  # fmt: skip
        quote = loan_payoff_quote(loan)
        wallet = ledger.account_for_user(user=loan.borrower, asset=loan.asset)
        for lender_id, principal, interest in quote.per_lender:
            _pay(loan=loan, key=f"loan:{loan.pk}:repay:lender:{lender_id}", lender_id=lender_id,
                 amount=principal + interest, kind=K.LOAN_INSTALLMENT, source=wallet)  # fmt: skip
        _close_installments(loan)
        _return_collateral(loan, loan.collateral_amount, f"loan:{loan.pk}:collateral:return")
        prec = loan.asset.precision
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

            raise PermissionDenied("Only the borrower can add collateral.")
        value = parse_amount(amount, precision=loan.collateral_asset.precision, field="amount")
        if loan.state not in OPEN_STATES:
            raise InvalidTransition(f"Loan #{loan.pk} is {loan.state}: it takes no collateral.",
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


# --- LTV, default, liquidation -------------------------------------------------------------

# Every open loan's LTV in one statement: the unpaid installments' principal and interest valued
# in the first fiat of LTV_FIATS that prices both assets, over the collateral's value there; and
# the age of the older of the two prices.
_LTV_SQL = """
WITH debt AS (
    SELECT loan_id, sum(principal + interest) AS owed
    FROM lending_installment WHERE status IN ('due', 'missed') GROUP BY loan_id
), px AS (
    SELECT p.asset_id, f.code AS fiat, p.price, p.updated_at
    FROM marketplace_priceindex p JOIN marketplace_fiatcurrency f ON f.id = p.fiat_id
    WHERE f.code = ANY(%(fiats)s)
), valued AS (
    SELECT DISTINCT ON (l.request_id)
           l.request_id, l.margin_called,
           d.owed * a.price / NULLIF(l.collateral_amount * c.price, 0) AS ltv
    FROM lending_loan l
    JOIN debt d ON d.loan_id = l.request_id
    JOIN px a ON a.asset_id = l.asset_id
    JOIN px c ON c.asset_id = l.collateral_asset_id AND c.fiat = a.fiat
    WHERE l.state IN ('active', 'late')
    ORDER BY l.request_id, array_position(%(fiats)s, a.fiat)
)
SELECT request_id, margin_called, coalesce(ltv, 1e9) FROM valued
"""


def loans_ltv() -> list[tuple[int, bool, Decimal]]:
    """(loan id, margin_called, LTV) of every open loan, in one query."""
    with connection.cursor() as cursor:
        cursor.execute(_LTV_SQL, {"fiats": list(LTV_FIATS)})
        return [(int(a), bool(b), Decimal(c)) for a, b, c in cursor.fetchall()]


def loans_check_ltv() -> dict[str, int]:
    """Beat (and after a price move): margin calls once per crossing, liquidations at the line."""
    rows = loans_ltv()
    call_line, liq_line = settings.LENDING_MARGIN_CALL_LTV, settings.LENDING_LIQUIDATION_LTV
    crossing = {pk: ltv for pk, called, ltv in rows if ltv >= call_line and not called}
    cleared = [pk for pk, called, ltv in rows if ltv < call_line and called]
    to_liquidate = [pk for pk, _, ltv in rows if ltv >= liq_line]
    called = 0
    with durable_atomic():
        if cleared:
            Loan.objects.filter(pk__in=cleared, margin_called=True).update(margin_called=False)
        if crossing:
            # Compare-and-set: of two overlapping checks, only one flips a loan and tells.
            flipped = list(
                Loan.objects.filter(
                    pk__in=list(crossing), margin_called=False, state__in=OPEN_STATES
                ).order_by("pk")
            )
            Loan.objects.filter(pk__in=[x.pk for x in flipped]).update(margin_called=True)
            events = LoanEvent.objects.bulk_create(
                LoanEvent(request_id=x.pk, subject="loan", old_state=x.state, new_state=x.state,
                          actor=None, actor_role=SYSTEM,
                          reason=f"margin call: LTV {crossing[x.pk]:.4f}")
                for x in flipped
            )  # fmt: skip
            announce(events)
            for x in flipped:
                x.margin_called = True
                announce_margin_call(x, crossing[x.pk])
            called = len(flipped)
    liquidated = 0
    for pk in to_liquidate:
        try:
            if (
                loan_liquidate(loan_id=pk, reason="LTV at the liquidation line").state
                == L.LIQUIDATED
            ):
                liquidated += 1
        except ApplicationError:
            logger.warning("loan #%s: not liquidated", pk, exc_info=True)
    return {"checked": len(rows), "margin_calls": called, "liquidated": liquidated}


def loan_default(*, loan_id: int) -> Loan:
    """A late loan whose grace period ran out defaults."""
    with durable_atomic():
        loan = _lock_loan(loan_id)
        grace = timedelta(hours=settings.LENDING_GRACE_HOURS)
        if (
            loan.state != L.LATE
            or loan.late_since is None
            or timezone.now() < loan.late_since + grace
        ):
            return loan
        _loan_transition(loan=loan, to=L.DEFAULTED, actor=None, role=SYSTEM,
                         reason=f"late since {loan.late_since.isoformat()}; grace over")  # fmt: skip
    return loan


def loans_default_overdue() -> int:
    """Beat: default the late loans past their grace, then liquidate every defaulted loan (a
    liquidation refused on a stale price is tried again on the next run)."""
    cutoff = timezone.now() - timedelta(hours=settings.LENDING_GRACE_HOURS)
    late = Loan.objects.filter(state=L.LATE, late_since__lte=cutoff).order_by("pk")
    for pk in list(late.values_list("pk", flat=True)):
        loan_default(loan_id=pk)
    done = 0
    for pk in list(
        Loan.objects.filter(state=L.DEFAULTED).order_by("pk").values_list("pk", flat=True)
    ):
        try:
            if loan_liquidate(loan_id=pk, reason="default").state == L.LIQUIDATED:
                done += 1
        except ApplicationError:
            logger.warning("loan #%s: not liquidated", pk, exc_info=True)
    return done


def loan_liquidate(*, loan_id: int, reason: str = "") -> Loan:
    """Hand the collateral to the lenders in kind at the index price: each gets collateral worth
    what they are owed plus LENDING_LIQUIDATION_PENALTY, the borrower the rest; when it does not
    cover that, the lenders share all of it pro rata to what they are owed and the part of the
    debt left uncovered is the shortfall. Refused (and recorded) on a stale price, and while
    moderators have paused liquidations (the loan is then left as it is)."""
    with durable_atomic():
        loan = _lock_loan(loan_id)
        if loan.state not in (L.ACTIVE, L.LATE, L.DEFAULTED):
            raise InvalidTransition(f"Loan #{loan.pk} is {loan.state}: nothing to liquidate.",
                                    fields={"state": [loan.state]})  # fmt: skip
        paused = liquidations_paused()
        if paused is not None:
            # A moderator paused liquidations (a broken price feed): the loan stays as it is.
            why = f"liquidations paused by moderators: {paused.reason or 'no reason given'}"
            event(request_id=loan.pk, subject="loan", old=loan.state, new=loan.state, actor=None,
                  role=SYSTEM, reason=f"liquidation not done ({reason or 'requested'}): {why}")  # fmt: skip
            return loan
        price = pair_price(asset_id=loan.asset_id, collateral_asset_id=loan.collateral_asset_id)
        now = timezone.now()
        if price.is_stale(now):
            why = (f"price index stale (updated {price.updated_at.isoformat()}, max age "
                   f"{settings.PRICE_MAX_AGE}s)")  # fmt: skip
            loan.liquidation_blocked_at = now
            loan.save(update_fields=["liquidation_blocked_at", "updated_at"])
            event(request_id=loan.pk, subject="loan", old=loan.state, new=loan.state, actor=None,
                  role=SYSTEM, reason=f"liquidation blocked: {why}")  # fmt: skip
            announce_liquidation_blocked(loan, why)
            return loan
        ltv = price.ltv(debt=loan_scheduled_debt(loan), collateral=loan.collateral_amount)
        if loan.state != L.DEFAULTED and ltv < settings.LENDING_LIQUIDATION_LTV:
            raise Conflict(f"Loan #{loan.pk}: LTV {ltv:.4f} is below the liquidation line.",
                           code="not_liquidatable")  # fmt: skip
        quote = loan_payoff_quote(loan, now=now)
        cprec, aprec = loan.collateral_asset.precision, loan.asset.precision
        held = loan.collateral_amount
        debts = [p + i for _, p, i in quote.per_lender]
        factor = 1 + settings.LENDING_LIQUIDATION_PENALTY
        wants = [round_down(price.collateral_for(d * factor), cprec) for d in debts]
        if sum(wants, Decimal(0)) <= held:
            given, shortfall = wants, Decimal(0)
        else:
            given = split_pro_rata(amount=held, weights=debts, precision=cprec)
            covered = round_down(price.value_in_asset(held), aprec)
            shortfall = max(quote.total - covered, Decimal(0))
        source = collateral_account(loan.pk, loan.collateral_asset)
        for (lender_id, _, _), amount in zip(quote.per_lender, given, strict=True):
            _pay(loan=loan, key=f"loan:{loan.pk}:liquidation:lender:{lender_id}",
                 lender_id=lender_id, amount=amount, kind=K.LOAN_LIQUIDATION, source=source)  # fmt: skip
        loan.collateral_amount -= sum(given, Decimal(0))
        _return_collateral(loan, loan.collateral_amount, f"loan:{loan.pk}:liquidation:borrower")
        loan.shortfall = shortfall
        _close_installments(loan)
        _loan_transition(
            loan=loan, to=L.LIQUIDATED, actor=None, role=SYSTEM,
            reason=(f"{reason or 'liquidated'}: LTV {ltv:.4f}, {price.fiat} "
                    f"{loan.asset.code} {price.asset_price} / {loan.collateral_asset.code} "
                    f"{price.collateral_price}; debt {fmt(quote.total, aprec)}, shortfall "
                    f"{fmt(shortfall, aprec)}"),
        )  # fmt: skip
    return loan
