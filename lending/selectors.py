"""Reads of lending: requests, loans of a user, and what a loan's page shows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet

from common.errors import ApplicationError, NotFound
from lending.models import Loan, LoanRequest
from lending.services import loan_scheduled_debt, pair_price


def loan_request_list() -> QuerySet[LoanRequest]:
    return LoanRequest.objects.select_related("asset", "collateral_asset").order_by("-id")


def loan_request_get(*, request_id: int) -> LoanRequest:
    found = loan_request_list().filter(pk=request_id).first()
    if found is None:
        raise NotFound(f"Loan request #{request_id} not found.")
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
        raise NotFound(f"Loan #{loan_id} not found.")
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
