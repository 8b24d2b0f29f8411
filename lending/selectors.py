"""Reads of lending: requests, loans of a user, and what a loan's page shows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from accounts.selectors import is_moderator
from common.errors import ApplicationError, NotFound
from common.money import parse_decimal
from ledger.models import Transfer
from lending.models import (
    LendingControl,
    LendingControlChange,
    Loan,
    LoanCommitment,
    LoanDispute,
    LoanEvent,
    LoanOffer,
    LoanRequest,
)
from lending.services import (
    PairPrice,
    loan_schedule,
    loan_scheduled_debt,
    loans_ltv,
    pair_price,
)


def loan_request_list() -> QuerySet[LoanRequest]:
    return LoanRequest.objects.select_related("asset", "collateral_asset").order_by("-id")


def loan_request_get(*, request_id: int) -> LoanRequest:
    found = loan_request_list().filter(pk=request_id).first()
    if found is None:
        raise NotFound(
            gettext("Loan request #{request_id} not found.").format(request_id=request_id)
        )
    return found


def loan_request_list_open(
    *, asset: str | None = None, min_rate: Decimal | None = None, max_term: int | None = None,
    max_ltv: Decimal | None = None,
) -> QuerySet[LoanRequest] | list[LoanRequest]:  # fmt: skip
    """Open requests lenders may still fund (deadline ahead), newest first, filtered by the asset
    borrowed, the least annual rate (percent), the longest term and the highest LTV (a fraction)
    at today's index. The LTV filter values each request (loan_request_ltvs), so it reads the
    rows the other filters left; without it the result stays a lazy queryset to paginate."""
    qs = (
        loan_request_list()
        .filter(state=LoanRequest.State.OPEN, funding_deadline__gt=timezone.now())
        .select_related("borrower")
    )
    if asset:
        qs = qs.filter(asset__code=asset.upper())
    if min_rate is not None:
        qs = qs.filter(annual_rate__gte=min_rate)
    if max_term is not None:
        qs = qs.filter(term_months__lte=max_term)
    if max_ltv is None:
        return qs
    rows = list(qs)
    ltvs = loan_request_ltvs(rows)
    return [r for r in rows if (ltv := ltvs.get(r.pk)) is not None and ltv <= max_ltv]


def loan_request_ltvs(requests: Iterable[LoanRequest]) -> dict[int, Decimal | None]:
    """Each request's LTV at today's index: its whole scheduled debt (principal plus interest,
    as loan_ltv_quote counts it) over its collateral; None when no index values the pair. One
    price query per distinct pair."""
    prices: dict[tuple[int, int], PairPrice | None] = {}
    now = timezone.now()
    out: dict[int, Decimal | None] = {}
    for r in requests:
        pair = (r.asset_id, r.collateral_asset_id)
        if pair not in prices:
            try:
                prices[pair] = pair_price(asset_id=pair[0], collateral_asset_id=pair[1])
            except ApplicationError:
                prices[pair] = None
        price = prices[pair]
        if price is None:
            out[r.pk] = None
            continue
        rows = loan_schedule(
            principal=r.amount, annual_rate=r.annual_rate, term_months=r.term_months,
            plan=r.plan, precision=r.asset.precision, start=now,
        )  # fmt: skip
        debt = r.amount + sum((x.interest for x in rows), Decimal(0))
        out[r.pk] = price.ltv(debt=debt, collateral=r.collateral_amount)
    return out


def loan_request_list_for_borrower(*, user: Any, states: Iterable[str]) -> QuerySet[LoanRequest]:
    return loan_request_list().filter(borrower=user, state__in=list(states))


def loan_commitment_list(*, request_id: int) -> QuerySet[LoanCommitment]:
    """A request's commitments in funding order, with their lenders."""
    return LoanCommitment.objects.filter(request_id=request_id).select_related("lender")


def loan_commitment_list_for_lender(
    *, user: Any, request_states: Iterable[str]
) -> QuerySet[LoanCommitment]:
    """The lender's commitments on requests in these states, newest first."""
    return (
        LoanCommitment.objects.filter(lender=user, request__state__in=list(request_states))
        .select_related("request__asset", "request__collateral_asset", "request__borrower")
        .order_by("-request_id")
    )


def loan_offer_list(
    *, state: str = "open", asset: str | None = None, min_rate: str | None = None,
    max_rate: str | None = None,
) -> QuerySet[LoanOffer]:  # fmt: skip
    """Offers in a state, filtered by the asset lent and the annual rate (percent); a filter
    that is not a number is refused naming it."""
    qs = (
        LoanOffer.objects.filter(state=state)
        .select_related("asset", "lender")
        .prefetch_related("collaterals__asset")
        .order_by("annual_rate", "-id")
    )
    if asset:
        qs = qs.filter(asset__code=asset.upper())
    for field, value, lookup in (("min_rate", min_rate, "gte"), ("max_rate", max_rate, "lte")):
        if value not in (None, ""):
            rate = parse_decimal(value, field=field)
            qs = qs.filter(**{f"annual_rate__{lookup}": rate})
    return qs


def loan_offer_get(*, offer_id: int) -> LoanOffer:
    found = (
        LoanOffer.objects.select_related("asset", "lender")
        .prefetch_related("collaterals__asset")
        .filter(pk=offer_id)
        .first()
    )
    if found is None:
        raise NotFound(gettext("Loan offer #{offer_id} not found.").format(offer_id=offer_id))
    return found


def loan_list_for_user(*, user: Any) -> QuerySet[Loan]:
    """Loans where the user is the borrower or one of the lenders."""
    return (
        Loan.objects.filter(Q(borrower=user) | Q(request__commitments__lender=user))
        .select_related("asset", "collateral_asset")
        .distinct()
        .order_by("-request_id")
    )


def loan_get_for_user(*, loan_id: int, user: Any) -> Loan:
    found = loan_list_for_user(user=user).filter(pk=loan_id).first()
    if found is None:
        raise NotFound(gettext("Loan #{loan_id} not found.").format(loan_id=loan_id))
    return found


def loan_disputes_for_user(*, loan_id: int, user: Any) -> QuerySet[LoanDispute]:
    """A loan's disputes, newest first, for one of its parties (404 for anyone else)."""
    loan_get_for_user(loan_id=loan_id, user=user)
    return (
        LoanDispute.objects.filter(loan_id=loan_id).prefetch_related("statements").order_by("-pk")
    )


def loan_party_users(*, loan_id: int) -> list[tuple[int, str, str]]:
    """(user id, username, role) of a loan's borrower and lenders, the borrower first."""
    from django.contrib.auth import get_user_model

    ids = loan_parties(loan_ids=[loan_id]).get(loan_id, [])
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    return [
        (pk, names.get(pk, "?"), "borrower" if i == 0 else "lender") for i, pk in enumerate(ids)
    ]


def loan_dispute_get_for_user(*, dispute_id: int, user: Any) -> LoanDispute:
    """A dispute with its statements, for a party of its loan or a moderator."""
    found = (
        LoanDispute.objects.select_related("loan", "opened_by", "assigned_to", "compensation_asset")
        .prefetch_related("statements__author")
        .filter(pk=dispute_id)
        .first()
    )
    if found is None or not (
        is_moderator(user) or loan_list_for_user(user=user).filter(pk=found.loan_id).exists()
    ):
        raise NotFound(gettext("Dispute #{dispute_id} not found.").format(dispute_id=dispute_id))
    return found


def loan_ltv(loan: Loan) -> Decimal | None:
    """The loan's LTV at today's index (None when it can't be valued or is closed)."""
    if loan.collateral_amount <= 0:
        return None
    try:
        price = pair_price(asset_id=loan.asset_id, collateral_asset_id=loan.collateral_asset_id)
    except ApplicationError:
        return None
    return price.ltv(debt=loan_scheduled_debt(loan), collateral=loan.collateral_amount)


def loan_parties(*, loan_ids: list[int]) -> dict[int, list[int]]:
    """Each loan's borrower and lenders (user ids, the borrower first, each once), in one
    query: who is told a loan's news."""
    parties: dict[int, list[int]] = {}
    rows = (
        Loan.objects.filter(pk__in=loan_ids)
        .values_list("pk", "borrower_id", "request__commitments__lender_id")
        .order_by("pk", "request__commitments__id")
    )
    for loan_id, borrower_id, lender_id in rows:
        users = parties.setdefault(loan_id, [borrower_id])
        if lender_id is not None and lender_id not in users:
            users.append(lender_id)
    return parties


# --- moderators ----------------------------------------------------------------------------

LOAN_TRANSFER_KINDS = (
    Transfer.Kind.LOAN_COLLATERAL,
    Transfer.Kind.LOAN_FUNDING,
    Transfer.Kind.LOAN_INSTALLMENT,
    Transfer.Kind.LOAN_LIQUIDATION,
    Transfer.Kind.LOAN_FEE,
)


@dataclass(frozen=True, slots=True)
class LoanAtRisk:
    loan: Loan
    ltv: Decimal


def loans_at_risk(*, min_ltv: Decimal | None = None, limit: int = 200) -> list[LoanAtRisk]:
    """Open loans by LTV, highest first: the LTV check's own set-based query (loans_ltv), then
    one query for the rows shown."""
    rows = sorted(
        ((pk, ltv) for pk, _, ltv in loans_ltv() if min_ltv is None or ltv >= min_ltv),
        key=lambda row: (-row[1], row[0]),
    )[:limit]
    loans = Loan.objects.select_related("asset", "collateral_asset", "borrower").in_bulk(
        [pk for pk, _ in rows]
    )
    return [LoanAtRisk(loans[pk], ltv) for pk, ltv in rows if pk in loans]


def loan_events(*, loan_id: int) -> QuerySet[LoanEvent]:
    return (
        LoanEvent.objects.filter(request_id=loan_id)
        .select_related("actor")
        .order_by("created_at", "pk")
    )


def loan_transfers(*, loan_id: int) -> QuerySet[Transfer]:
    """Every ledger transfer of a loan and its request: the loan kinds with its id as reference."""
    return (
        Transfer.objects.filter(reference=loan_id, kind__in=LOAN_TRANSFER_KINDS)
        .select_related("asset", "debit_account", "credit_account")
        .order_by("pk")
    )


def lending_control() -> LendingControl:
    """The switches (an unsaved default row until a moderator first uses them)."""
    return LendingControl.objects.filter(pk=1).first() or LendingControl(pk=1)


def lending_control_changes(*, limit: int = 10) -> list[LendingControlChange]:
    return list(LendingControlChange.objects.select_related("actor")[:limit])
