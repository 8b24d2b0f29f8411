"""Margin calls and liquidation against hand-computed figures; underwater; stale prices; a missed
installment through grace to default and liquidation, and a top-up that cures it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from ledger import services as ledger
from lending import services
from lending.models import Loan, LoanEvent
from lending.tests.helpers import at, bal, lenders, request_example
from marketplace.models import PriceIndex
from marketplace.services import price_index_set
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db


@pytest.fixture
def usdt_loan(alice):
    """1500 USDT borrowed against 1 ETH (ETH 3000 EUR, USDT 0.92 EUR: LTV 0.4667), funded by
    two lenders with 1000 and 500 USDT."""
    fund(alice, "ETH", "1")
    request = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                              collateral_amount="1")  # fmt: skip
    big, small = lenders("1000", "500", asset="USDT")
    services.loan_request_fund(request_id=request.pk, lender=big, amount="1000")
    services.loan_request_fund(request_id=request.pk, lender=small, amount="500")
    return Loan.objects.get(pk=request.pk), big, small


@pytest.fixture
def margin_calls():
    calls = []
    services.margin_call_listeners.append(lambda loan, ltv: calls.append((loan.pk, ltv)))
    yield calls
    services.margin_call_listeners.pop()


def test_price_crash_margin_call_once_then_liquidation(
    usdt_loan, alice, margin_calls, django_capture_on_commit_callbacks
):
    loan, big, small = usdt_loan
    assert loan.state == "active"
    assert bal(alice, "USDT") == Decimal("1500")
    # given ETH falls to 1800 EUR: LTV = 1521.95... USDT * 0.92 / 1800 = 0.778, past 0.75
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1800")
    with django_capture_on_commit_callbacks(execute=True):
        first = services.loans_check_ltv()
    with django_capture_on_commit_callbacks(execute=True):
        second = services.loans_check_ltv()
    # then the borrower is told once per crossing, and nothing is liquidated
    assert (first["margin_calls"], second["margin_calls"]) == (1, 0)
    assert len(margin_calls) == 1
    assert margin_calls[0][0] == loan.pk
    assert Decimal("0.77") < margin_calls[0][1] < Decimal("0.78")
    assert Loan.objects.get(pk=loan.pk).margin_called

    # when ETH falls to 1600: LTV 0.875, past 0.83
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1600")
    assert services.loans_check_ltv()["liquidated"] == 1
    # then, the same day (no interest accrued), each lender gets ETH worth their debt + 5 %:
    # 1000 USDT * 1.05 * 0.92 / 1600 = 0.60375 ETH and 500 * 1.05 * 0.92 / 1600 = 0.301875,
    # and the borrower the rest: 1 - 0.905625 = 0.094375 ETH
    loan.refresh_from_db()
    assert (loan.state, loan.shortfall, loan.collateral_amount) == ("liquidated", 0, 0)
    assert bal(big, "ETH") == Decimal("0.60375")
    assert bal(small, "ETH") == Decimal("0.301875")
    assert bal(alice, "ETH") == Decimal("0.094375")
    assert set(loan.installments.values_list("status", flat=True)) == {"closed"}
    last = LoanEvent.objects.filter(request_id=loan.pk).last()
    assert (last.old_state, last.new_state) == ("active", "liquidated")
    assert "EUR USDT 0.92000000 / ETH 1600.00000000" in last.reason


def test_underwater_collateral_records_the_shortfall(usdt_loan, alice):
    loan, big, small = usdt_loan
    # ETH at 1000 EUR: 1 ETH is worth 1086.956521 USDT, less than the 1500 owed
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1000")
    services.loans_check_ltv()
    loan.refresh_from_db()
    assert loan.state == "liquidated"
    # the lenders take all of it pro rata (2 : 1), the last absorbing the rounding
    assert bal(big, "ETH") == Decimal("0.666666666666666666")
    assert bal(small, "ETH") == Decimal("0.333333333333333334")
    assert bal(alice, "ETH") == 0
    assert loan.shortfall == Decimal("1500") - Decimal("1086.956521")


def test_stale_price_blocks_liquidation_and_is_recorded(
    usdt_loan, alice, django_capture_on_commit_callbacks
):
    loan, big, _ = usdt_loan
    blocked = []
    services.liquidation_blocked_listeners.append(lambda loan, why: blocked.append(loan.pk))
    try:
        price_index_set(asset_code="ETH", fiat_code="EUR", price="1000")
        PriceIndex.objects.update(updated_at=timezone.now() - timedelta(hours=2))
        with django_capture_on_commit_callbacks(execute=True):
            result = services.loans_check_ltv()
    finally:
        services.liquidation_blocked_listeners.pop()
    loan.refresh_from_db()
    assert result["liquidated"] == 0
    assert loan.state == "active"
    assert loan.liquidation_blocked_at is not None
    assert bal(big, "ETH") == 0
    assert bal(alice, "ETH") == 0
    assert LoanEvent.objects.filter(request_id=loan.pk, reason__startswith="liquidation blocked")
    assert blocked == [loan.pk]  # told once, on commit


def _empty_wallet(user, asset_code: str) -> None:
    from ledger.models import Asset

    asset = Asset.objects.get(code=asset_code)
    with transaction.atomic():
        ledger.transfer_post(idempotency_key=f"test:out:{user.pk}",
                             debit=ledger.account_for_user(user=user, asset=asset),
                             credit=ledger.account_world(asset=asset),
                             amount=bal(user, asset_code), kind="withdrawal")  # fmt: skip


@pytest.fixture
def eth_loan(alice):
    fund(alice, "USDT", "6000")
    request = request_example(alice)
    (lender,) = lenders("1")
    services.loan_request_fund(request_id=request.pk, lender=lender, amount="1")
    _empty_wallet(alice, "ETH")  # the borrower spent what they borrowed
    return Loan.objects.get(pk=request.pk), lender


def test_missed_installment_late_then_top_up_cures(eth_loan, alice, monkeypatch):
    loan, lender = eth_loan
    first = loan.installments.get(n=1)
    at(monkeypatch, first.due_at + timedelta(minutes=1))
    assert services.installments_collect_due() == 0
    loan.refresh_from_db()
    assert loan.state == "late"
    assert loan.late_since == first.due_at + timedelta(minutes=1)
    assert loan.installments.get(n=1).status == "missed"
    # a top-up during the grace period, then collection: cured
    at(monkeypatch, first.due_at + timedelta(hours=24))
    fund(alice, "ETH", "1")
    assert services.loans_default_overdue() == 0
    assert services.installments_collect_due() == 1
    loan.refresh_from_db()
    assert (loan.state, loan.late_since) == ("active", None)
    assert bal(lender, "ETH") == first.principal + first.interest


def test_missed_installment_grace_default_liquidation(eth_loan, alice, monkeypatch):
    loan, lender = eth_loan
    first = loan.installments.get(n=1)
    at(monkeypatch, first.due_at + timedelta(minutes=1))
    services.installments_collect_due()
    # within the grace period nothing happens
    at(monkeypatch, first.due_at + timedelta(hours=71))
    assert services.loans_default_overdue() == 0
    assert Loan.objects.get(pk=loan.pk).state == "late"
    # after it the loan defaults; the prices are a month old, so the liquidation waits
    later = first.due_at + timedelta(hours=73)
    at(monkeypatch, later)
    assert services.loans_default_overdue() == 0
    loan.refresh_from_db()
    assert loan.state == "defaulted"
    assert loan.liquidation_blocked_at == later
    # fresh prices: liquidated. Owed: 1 ETH plus interest over the whole days since activation
    price_index_set(asset_code="ETH", fiat_code="EUR", price="3000")
    price_index_set(asset_code="USDT", fiat_code="EUR", price="0.92")
    assert services.loans_default_overdue() == 1
    loan.refresh_from_db()
    days = (later - loan.activated_at).days
    interest = (Decimal("0.05") * days / 365).quantize(Decimal("1e-18"), "ROUND_DOWN")
    owed_usdt = ((1 + interest) * Decimal("1.05") * 3000 / Decimal("0.92")).quantize(
        Decimal("0.000001"), "ROUND_DOWN"
    )
    assert loan.state == "liquidated"
    assert bal(lender, "USDT") == owed_usdt
    assert bal(alice, "USDT") == Decimal("6000") - owed_usdt
