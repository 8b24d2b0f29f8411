"""The LTV check, margin calls, default and liquidation."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from common.errors import ApplicationError, Conflict, InvalidTransition
from common.money import fmt, round_down
from common.transactions import durable_atomic
from ledger import services as ledger
from ledger.models import LedgerAccount, Transfer
from ledger.services import TransferSpec
from lending.models import Installment, LendingControl, Loan, LoanCommitment, LoanEvent
from lending.services.controls import liquidations_paused
from lending.services.loans import (
    OPEN_STATES,
    UNPAID,
    K,
    L,
    Payoff,
    S,
    _close_installments,
    _lenders,
    _lock_loan,
    _pay,
    _return_collateral,
    payoff_of,
)
from lending.services.pricing import LTV_FIATS, PairPrice, pair_price, pair_prices
from lending.services.requests import collateral_account
from lending.services.schedule import split_pro_rata
from lending.services.transitions import (
    SYSTEM,
    _check,
    _loan_transition,
    announce,
    announce_liquidation_blocked,
    announce_margin_calls,
    system_event,
    system_notes,
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


def loans_check_ltv(*, batch_size: int | None = None) -> dict[str, int]:
    """Beat (and after a price move): margin calls once per crossing, liquidations at the line
    (set-based, in batches: loans_liquidate)."""
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
            # Compare-and-set: of two overlapping checks, only one flips a loan and tells. The
            # row lock makes the second wait for the first's commit and re-read margin_called
            # (without it both would read False and both tell); pk order, so no deadlock.
            flipped = list(
                Loan.objects.select_for_update(of=("self",))
                .filter(pk__in=list(crossing), margin_called=False, state__in=OPEN_STATES)
                .order_by("pk")
            )
            Loan.objects.filter(pk__in=[x.pk for x in flipped]).update(margin_called=True)
            system_notes([(x, f"margin call: LTV {crossing[x.pk]:.4f}") for x in flipped])
            for x in flipped:
                x.margin_called = True
            announce_margin_calls([(x, crossing[x.pk]) for x in flipped])
            called = len(flipped)
    liquidated = loans_liquidate(
        loan_ids=to_liquidate,
        reason=gettext_noop("LTV at the liquidation line"),
        batch_size=batch_size,
    )
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


def loans_default_overdue(*, batch_size: int | None = None) -> int:
    """Beat: default the late loans past their grace, then liquidate every defaulted loan (a
    liquidation refused on a stale price is tried again on the next run)."""
    cutoff = timezone.now() - timedelta(hours=settings.LENDING_GRACE_HOURS)
    late = Loan.objects.filter(state=L.LATE, late_since__lte=cutoff).order_by("pk")
    for pk in list(late.values_list("pk", flat=True)):
        loan_default(loan_id=pk)
    defaulted = Loan.objects.filter(state=L.DEFAULTED).order_by("pk").values_list("pk", flat=True)
    return loans_liquidate(loan_ids=list(defaulted), reason="default", batch_size=batch_size)


# --- what a liquidation moves (one computation for the single and the batched path) ---------

LIQUIDATABLE = (L.ACTIVE, L.LATE, L.DEFAULTED)
# Loans liquidated in one transaction by loans_liquidate: their locks, one ledger batch.
LIQUIDATION_BATCH_SIZE = 500


@dataclass(frozen=True, slots=True)
class Liquidation:
    """What liquidating a loan at `price` hands to whom, in the collateral asset."""

    ltv: Decimal  # the scheduled debt's value over the collateral's
    price: PairPrice
    quote: Payoff  # what the lenders are owed: principal plus interest accrued
    to_lenders: list[tuple[int, Decimal]]  # (lender id, collateral), in commitment order
    fee: Decimal  # to the platform's fee account: its share of the lenders' interest
    to_borrower: Decimal
    shortfall: Decimal  # in the loan's asset: the debt the collateral did not cover

    def reason(self, loan: Loan, why: str) -> str:
        """The audit line: the LTV and both prices it was decided on, the debt, shortfall, fee."""
        aprec, cprec = loan.asset.precision, loan.collateral_asset.precision
        price = self.price
        text = (
            f"{why or 'liquidated'}: LTV {self.ltv:.4f}, {price.fiat} {loan.asset.code} "
            f"{price.asset_price} / {loan.collateral_asset.code} {price.collateral_price}; "
            f"debt {fmt(self.quote.total, aprec)}, shortfall {fmt(self.shortfall, aprec)}"
        )
        if self.fee:
            text += f"; fee {fmt(self.fee, cprec)} {loan.collateral_asset.code}"
        return text


def liquidation_of(
    loan: Loan,
    *,
    installments: list[Installment],
    lenders: list[tuple[int, Decimal]],
    price: PairPrice,
    now: datetime,
) -> Liquidation:
    """Liquidating `loan` at `price` now, from its installments and (lender, commitment) rows:
    each lender is owed their outstanding principal plus accrued interest (the payoff quote)
    and gets collateral worth that plus LENDING_LIQUIDATION_PENALTY, less the platform's fee
    (their interest times the loan's interest_fee, rounded down in the loan's asset, then in
    collateral at the same price, rounded down); the borrower gets the rest. When the
    collateral does not cover every lender's part, the lenders share all of it pro rata to what
    they are owed, no fee is taken and the debt left uncovered is the shortfall. Pure
    arithmetic: loan_liquidate and loans_liquidate both compute it here."""
    aprec, cprec = loan.asset.precision, loan.collateral_asset.precision
    held = loan.collateral_amount
    debt = sum((r.principal + r.interest for r in installments if r.status in UNPAID), Decimal(0))
    ltv = price.ltv(debt=debt, collateral=held) if held else Decimal("1e9")
    quote = payoff_of(loan, installments=installments, lenders=lenders, now=now)
    debts = [p + i for _, p, i in quote.per_lender]
    factor = 1 + settings.LENDING_LIQUIDATION_PENALTY
    wants = [round_down(price.collateral_for(d * factor), cprec) for d in debts]
    if sum(wants, Decimal(0)) <= held:
        fees = [
            round_down(price.collateral_for(round_down(i * loan.interest_fee, aprec)), cprec)
            for _, _, i in quote.per_lender
        ]
        given = [w - f for w, f in zip(wants, fees, strict=True)]
        fee, shortfall = sum(fees, Decimal(0)), Decimal(0)
    else:
        given = split_pro_rata(amount=held, weights=debts, precision=cprec)
        covered = round_down(price.value_in_asset(held), aprec)
        fee, shortfall = Decimal(0), max(quote.total - covered, Decimal(0))
    to_lenders = [(lid, g) for (lid, _, _), g in zip(quote.per_lender, given, strict=True)]
    return Liquidation(
        ltv=ltv,
        price=price,
        quote=quote,
        to_lenders=to_lenders,
        fee=fee,
        to_borrower=held - sum(given, Decimal(0)) - fee,
        shortfall=shortfall,
    )


def _stale_why(price: PairPrice) -> str:
    if price.stale_reason:
        return f"price index stale ({price.stale_reason})"[:250]
    return (f"price index stale (updated {price.updated_at.isoformat()}, max age "
            f"{settings.PRICE_MAX_AGE}s)")  # fmt: skip


def _record_paused(loans: list[Loan], paused: LendingControl, why: str) -> None:
    """Moderators paused liquidations (a broken price feed): the locked loans stay as they are;
    each gets an audit row saying so."""
    text = (f"liquidation not done ({why or 'requested'}): liquidations paused by moderators: "
            f"{paused.reason or 'no reason given'}")[:300]  # fmt: skip
    system_notes([(loan, text) for loan in loans])


def _record_blocked(loans: list[Loan], prices: dict[tuple[int, int], PairPrice], now: Any) -> None:
    """A stale price blocks the liquidation of these locked loans: the refusal is kept on each
    loan (liquidation_blocked_at), audited, and the moderators are told on commit."""
    whys = {loan.pk: _stale_why(prices[loan.asset_id, loan.collateral_asset_id]) for loan in loans}
    Loan.objects.filter(pk__in=list(whys)).update(liquidation_blocked_at=now, updated_at=now)
    system_notes([(loan, f"liquidation blocked: {whys[loan.pk]}") for loan in loans])
    for loan in loans:
        loan.liquidation_blocked_at = now
        announce_liquidation_blocked(loan, whys[loan.pk])


# --- one loan -------------------------------------------------------------------------------


def loan_liquidate(*, loan_id: int, reason: str = "") -> Loan:
    """Hand the collateral to the lenders in kind at the index price (liquidation_of: each gets
    collateral worth what they are owed plus LENDING_LIQUIDATION_PENALTY less the platform's
    fee on their interest, the borrower the rest; underwater, the lenders share all of it and
    the shortfall is recorded). Refused (and recorded) on a stale price, and while moderators
    have paused liquidations (the loan is then left as it is)."""
    with durable_atomic():
        loan = _lock_loan(loan_id)
        if loan.state not in LIQUIDATABLE:
            raise InvalidTransition(gettext("Loan #{pk} is {state}: nothing to liquidate.").format(pk=loan.pk, state=loan.get_state_display()),
                                    fields={"state": [loan.state]})  # fmt: skip
        paused = liquidations_paused()
        if paused is not None:
            _record_paused([loan], paused, reason)
            return loan
        price = pair_price(asset_id=loan.asset_id, collateral_asset_id=loan.collateral_asset_id)
        now = timezone.now()
        if price.is_stale(now):
            _record_blocked([loan], {(loan.asset_id, loan.collateral_asset_id): price}, now)
            return loan
        plan = liquidation_of(loan, installments=list(loan.installments.order_by("n")),
                              lenders=_lenders(loan), price=price, now=now)  # fmt: skip
        if loan.state != L.DEFAULTED and plan.ltv < settings.LENDING_LIQUIDATION_LTV:
            raise Conflict(gettext("Loan #{pk}: LTV {ltv:.4f} is below the liquidation line.").format(pk=loan.pk, ltv=plan.ltv),
                           code="not_liquidatable")  # fmt: skip
        source = collateral_account(loan.pk, loan.collateral_asset)
        for lender_id, amount in plan.to_lenders:
            _pay(loan=loan, key=f"loan:{loan.pk}:liquidation:lender:{lender_id}",
                 lender_id=lender_id, amount=amount, kind=K.LOAN_LIQUIDATION, source=source)  # fmt: skip
        if plan.fee > 0:
            ledger.transfer_post(
                idempotency_key=f"loan:{loan.pk}:liquidation:fee",
                debit=source,
                credit=ledger.account_fees(asset=loan.collateral_asset),
                amount=plan.fee,
                kind=K.LOAN_FEE,
                reference=loan.pk,
            )
            loan.fees_collateral += plan.fee
            loan.save(update_fields=["fees_collateral", "updated_at"])
        loan.collateral_amount = plan.to_borrower
        _return_collateral(loan, plan.to_borrower, f"loan:{loan.pk}:liquidation:borrower")
        loan.shortfall = plan.shortfall
        _close_installments(loan)
        _loan_transition(loan=loan, to=L.LIQUIDATED, actor=None, role=SYSTEM,
                         reason=plan.reason(loan, reason))  # fmt: skip
    return loan


# --- many loans, set-based ------------------------------------------------------------------


def loans_liquidate(*, loan_ids: list[int], reason: str, batch_size: int | None = None) -> int:
    """Liquidate these loans as loan_liquidate does each, in batches of `batch_size` loans (one
    transaction each: _liquidate_batch). A loan another transaction holds locked is skipped
    (the next run retries it). Returns how many were liquidated."""
    ids = sorted(set(loan_ids))
    size = batch_size or LIQUIDATION_BATCH_SIZE
    return sum(_liquidate_batch(ids[i : i + size], reason) for i in range(0, len(ids), size))


def _liquidate_batch(ids: list[int], reason: str) -> int:
    """One transaction: lock the loans (pk order, SKIP LOCKED), re-check each one's state and
    LTV under the lock, compute each one's liquidation_of, then post every transfer of the
    batch in one ledger batch and move the loans, their installments and audit rows in bulk.
    Should the ledger refuse the batch (a key already used, an overdraft: IntegrityError), a
    savepoint undoes it and each loan goes through loan_liquidate on its own, after the commit.
    Paused liquidations and stale prices are handled and recorded exactly as loan_liquidate
    does."""
    retry: list[int] = []
    done = 0
    with durable_atomic():
        loans = list(
            Loan.objects.select_for_update(of=("self",), skip_locked=True)
            .select_related("asset", "collateral_asset")
            .filter(pk__in=ids, state__in=LIQUIDATABLE)
            .order_by("pk")
        )
        if not loans:
            return 0
        paused = liquidations_paused()
        if paused is not None:
            _record_paused(loans, paused, reason)
            return 0
        now = timezone.now()
        prices = pair_prices({(x.asset_id, x.collateral_asset_id) for x in loans})
        unpriced = [x.pk for x in loans if (x.asset_id, x.collateral_asset_id) not in prices]
        if unpriced:
            logger.warning("loans %s: no common price index; not liquidated", unpriced)
        priced = [x for x in loans if (x.asset_id, x.collateral_asset_id) in prices]
        stale = [x for x in priced if prices[x.asset_id, x.collateral_asset_id].is_stale(now)]
        if stale:
            _record_blocked(stale, prices, now)
        fresh = [x for x in priced if x not in stale]
        plans = _plan_batch(fresh, prices, now)
        if plans:
            try:
                with transaction.atomic():  # a savepoint: a refused batch undoes only itself
                    retry = _post_batch(plans, reason, now)
            except IntegrityError:
                logger.warning(
                    "a liquidation batch of %d loans was refused by the ledger; liquidating "
                    "them one by one",
                    len(plans),
                    exc_info=True,
                )
                retry = [loan.pk for loan, _ in plans]
            done = len(plans) - len(retry)
    for pk in retry:
        try:
            if loan_liquidate(loan_id=pk, reason=reason).state == L.LIQUIDATED:
                done += 1
        except ApplicationError:
            logger.warning("loan #%s: not liquidated", pk, exc_info=True)
    return done


def _plan_batch(
    loans: list[Loan], prices: dict[tuple[int, int], PairPrice], now: datetime
) -> list[tuple[Loan, Liquidation]]:
    """Each locked loan's liquidation_of, from its installments and commitments read for the
    whole batch in two queries; loans back below the line (and not defaulted) are left out."""
    if not loans:
        return []
    ids = [x.pk for x in loans]
    installments: dict[int, list[Installment]] = defaultdict(list)
    for row in Installment.objects.filter(loan_id__in=ids).order_by("loan_id", "n"):
        installments[row.loan_id].append(row)
    lenders: dict[int, list[tuple[int, Decimal]]] = defaultdict(list)
    for loan_id, lender_id, amount in (
        LoanCommitment.objects.filter(request_id__in=ids)
        .order_by("pk")  # commitment order, as loan_liquidate reads them
        .values_list("request_id", "lender_id", "amount")
    ):
        lenders[loan_id].append((lender_id, amount))
    plans = []
    for loan in loans:
        plan = liquidation_of(loan, installments=installments[loan.pk], lenders=lenders[loan.pk],
                              price=prices[loan.asset_id, loan.collateral_asset_id], now=now)  # fmt: skip
        if loan.state != L.DEFAULTED and plan.ltv < settings.LENDING_LIQUIDATION_LTV:
            logger.info("loan #%s: LTV %.4f, back below the liquidation line", loan.pk, plan.ltv)
            continue
        plans.append((loan, plan))
    return plans


def _post_batch(plans: list[tuple[Loan, Liquidation]], why: str, now: datetime) -> list[int]:
    """Every transfer of the batch in one ledger batch (the keys of loan_liquidate, so neither
    path can pay twice), then the loans, installments and audit rows in bulk. Returns the loans
    left for loan_liquidate (none, unless a collateral account is missing)."""
    codes = {f"loan:collateral:{loan.pk}": loan for loan, _ in plans}
    sources = {
        codes[code].pk: pk
        for code, pk, asset_id in LedgerAccount.objects.filter(code__in=list(codes)).values_list(
            "code", "pk", "asset_id"
        )
        if asset_id == codes[code].collateral_asset_id
    }
    missing = [loan.pk for loan, _ in plans if loan.pk not in sources]
    plans = [(loan, plan) for loan, plan in plans if loan.pk in sources]
    if not plans:
        return missing
    wallets = ledger.accounts_for_users(
        {(lid, loan.collateral_asset_id) for loan, plan in plans for lid, _ in plan.to_lenders}
        | {(loan.borrower_id, loan.collateral_asset_id) for loan, _ in plans}
    )
    fee_accounts = ledger.accounts_fees({x.collateral_asset_id for x, p in plans if p.fee > 0})
    specs: list[TransferSpec] = []

    def move(loan: Loan, key: str, to: int, amount: Decimal, kind: str) -> None:
        if amount > 0:
            specs.append(TransferSpec(
                idempotency_key=f"loan:{loan.pk}:liquidation:{key}",
                asset_id=loan.collateral_asset_id, debit_account_id=sources[loan.pk],
                credit_account_id=to, amount=amount, kind=kind, flags=Transfer.Flags.SINGLE,
                reference=loan.pk,
            ))  # fmt: skip

    for loan, plan in plans:
        asset = loan.collateral_asset_id
        for lender_id, amount in plan.to_lenders:
            move(loan, f"lender:{lender_id}", wallets[lender_id, asset], amount,
                 K.LOAN_LIQUIDATION)  # fmt: skip
        if plan.fee > 0:
            move(loan, "fee", fee_accounts[asset], plan.fee, K.LOAN_FEE)
        move(loan, "borrower", wallets[loan.borrower_id, asset], plan.to_borrower,
             K.LOAN_COLLATERAL)  # fmt: skip
    ledger.transfers_post_many(specs)
    Installment.objects.filter(loan_id__in=[x.pk for x, _ in plans], status__in=UNPAID).update(
        status=S.CLOSED
    )
    _liquidated_many(plans, why, now)
    return missing


def _liquidated_many(plans: list[tuple[Loan, Liquidation]], why: str, now: datetime) -> None:
    """_loan_transition to LIQUIDATED for many loans the caller holds locked: the same check of
    role and source state, the same timestamps and fields, one audit row each (with the prices
    the liquidation was decided on), announced on commit; one UPDATE and one INSERT."""
    events = []
    for loan, plan in plans:
        old = loan.state
        _check("loan", loan.pk, old, L.LIQUIDATED, SYSTEM)
        loan.state, loan.late_since, loan.closed_at, loan.updated_at = L.LIQUIDATED, None, now, now
        loan.collateral_amount = Decimal(0)
        loan.shortfall = plan.shortfall
        loan.fees_collateral += plan.fee
        events.append(system_event(loan_id=loan.pk, state=old, new=L.LIQUIDATED,
                                   reason=plan.reason(loan, why)))  # fmt: skip
    Loan.objects.bulk_update(
        [loan for loan, _ in plans],
        ["state", "late_since", "closed_at", "collateral_amount", "shortfall", "fees_collateral",
         "updated_at"],
    )  # fmt: skip
    announce(LoanEvent.objects.bulk_create(events))
