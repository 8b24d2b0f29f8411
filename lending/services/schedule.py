"""The repayment schedule and each lender's share of it: pure arithmetic, no database.

Amortized: the standard annuity, payment = P * r / (1 - (1 + r)^-n) with r = annual rate / 12;
each month's interest is the outstanding principal times r and its principal the payment minus
that interest, both rounded down to the asset's precision; the last installment takes whatever
principal is left (so the rounding lands there). Bullet: one installment at the end of the term,
the whole principal plus simple interest P * annual rate / 12 * months (rounded down); nothing is
paid before it.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from common.money import round_down

PLAN_AMORTIZED, PLAN_BULLET = "amortized", "bullet"


@dataclass(frozen=True, slots=True)
class ScheduledInstallment:
    n: int
    due_at: datetime
    principal: Decimal
    interest: Decimal

    @property
    def total(self) -> Decimal:
        return self.principal + self.interest


def add_months(start: datetime, months: int) -> datetime:
    """The same day `months` later, clamped to the month's last day (31 Jan + 1 = 28/29 Feb)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def loan_schedule(
    *,
    principal: Decimal,
    annual_rate: Decimal,
    term_months: int,
    plan: str,
    precision: int,
    start: datetime,
) -> list[ScheduledInstallment]:
    """Every installment of a loan starting at `start`: due date, principal, interest."""
    with localcontext() as ctx:
        ctx.prec = 60
        r = annual_rate / Decimal(100) / Decimal(12)
        if plan == PLAN_BULLET:
            interest = round_down(principal * r * term_months, precision)
            return [
                ScheduledInstallment(
                    term_months, add_months(start, term_months), principal, interest
                )
            ]
        payment = principal * r / (1 - (1 + r) ** -term_months)
        rows: list[ScheduledInstallment] = []
        outstanding = principal
        for n in range(1, term_months + 1):
            interest = round_down(outstanding * r, precision)
            if n == term_months:
                part = outstanding
            else:
                part = min(outstanding, max(round_down(payment, precision) - interest, Decimal(0)))
            rows.append(ScheduledInstallment(n, add_months(start, n), part, interest))
            outstanding -= part
        return rows


def split_pro_rata(*, amount: Decimal, weights: list[Decimal], precision: int) -> list[Decimal]:
    """`amount` in shares proportional to `weights`, each rounded down; the last takes the rest,
    so the shares add up to `amount` exactly."""
    total = sum(weights, Decimal(0))
    with localcontext() as ctx:
        ctx.prec = 60
        shares = [round_down(amount * w / total, precision) for w in weights[:-1]]
    return [*shares, amount - sum(shares, Decimal(0))]


def lender_shares(
    *,
    parts: list[Decimal],
    n: int,
    weights: list[Decimal],
    precision: int,
) -> list[Decimal]:
    """Each lender's share of part number `n` (1-based) of a series (the installments' principal,
    or their interest). Computed cumulatively: after part k a lender has received their pro-rata
    share of the first k parts rounded down (the last lender the rest), so after the last part
    every lender holds exactly their share of the whole series, and every part is paid out to
    the unit."""
    before = split_pro_rata(
        amount=sum(parts[: n - 1], Decimal(0)), weights=weights, precision=precision
    )
    after = split_pro_rata(amount=sum(parts[:n], Decimal(0)), weights=weights, precision=precision)
    return [a - b for a, b in zip(after, before, strict=True)]
