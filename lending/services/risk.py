"""The LTV check, margin calls, default and liquidation."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.utils import timezone

from common.errors import ApplicationError, Conflict, InvalidTransition
from common.money import fmt, round_down
from common.transactions import durable_atomic
from lending.models import Loan, LoanEvent
from lending.services.controls import liquidations_paused
from lending.services.loans import (
    OPEN_STATES,
    K,
    L,
    _close_installments,
    _lock_loan,
    _pay,
    _return_collateral,
    loan_payoff_quote,
    loan_scheduled_debt,
)
from lending.services.pricing import LTV_FIATS, pair_price
from lending.services.requests import collateral_account
from lending.services.schedule import split_pro_rata
from lending.services.transitions import (
    SYSTEM,
    _loan_transition,
    announce,
    announce_liquidation_blocked,
    announce_margin_call,
    event,
)

logger = logging.getLogger(__name__)


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
