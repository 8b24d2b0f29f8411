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
    services.margin_call_listeners.append(
        lambda called: calls.extend((loan.pk, ltv) for loan, ltv in called)
    )
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


# --- the platform's fee at liquidation: from the lenders' interest, never from the borrower ---


def _fees(asset_code: str) -> Decimal:
    from ledger.models import Asset

    return ledger.account_fees(asset=Asset.objects.get(code=asset_code)).balance


@pytest.fixture
def fee_loan(settings, alice, monkeypatch):
    """usdt_loan activated with LENDING_INTEREST_FEE 0.10, then 20 days later (no installment
    due yet) ETH at 1600 EUR and USDT at 0.92 (fresh): LTV 1521.95 * 0.92 / 1600 = 0.875."""
    settings.LENDING_INTEREST_FEE = Decimal("0.10")
    fund(alice, "ETH", "1")
    request = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                              collateral_amount="1")  # fmt: skip
    big, small = lenders("1000", "500", asset="USDT")
    services.loan_request_fund(request_id=request.pk, lender=big, amount="1000")
    services.loan_request_fund(request_id=request.pk, lender=small, amount="500")
    loan = Loan.objects.get(pk=request.pk)
    assert loan.interest_fee == Decimal("0.10")
    at(monkeypatch, loan.activated_at + timedelta(days=20))
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1600")
    price_index_set(asset_code="USDT", fiat_code="EUR", price="0.92")
    return loan, big, small


@pytest.mark.parametrize("path", ["single", "batch"])
def test_liquidation_fee_is_taken_from_the_lenders_interest(fee_loan, alice, path):
    loan, big, small = fee_loan
    # when the loan is liquidated, alone or in a batch
    if path == "single":
        services.loan_liquidate(loan_id=loan.pk, reason="LTV at the liquidation line")
    else:
        assert services.loans_check_ltv()["liquidated"] == 1
    # then, by hand: interest over 20 days = 1500 * 0.05 * 20 / 365 = 4.109589 (rounded down),
    # split 2 : 1 -> 2.739726 and 1.369863; owed 1002.739726 and 501.369863 USDT.
    # Each lender's collateral: owed * 1.05 * 0.92 / 1600 ETH, less the fee on their interest:
    # 10 % of 2.739726 = 0.273972 USDT -> 0.273972 * 0.92 / 1600 = 0.0001575339 ETH, and
    # 10 % of 1.369863 = 0.136986 USDT -> 0.00007876695 ETH.
    # big:   1002.739726 * 1.05 * 0.92 / 1600 = 0.6054041095725 - 0.0001575339
    # small:  501.369863 * 1.05 * 0.92 / 1600 = 0.30270205478625 - 0.00007876695
    loan.refresh_from_db()
    assert (loan.state, loan.shortfall, loan.collateral_amount) == ("liquidated", 0, 0)
    assert bal(big, "ETH") == Decimal("0.6052465756725")
    assert bal(small, "ETH") == Decimal("0.30262328783625")
    assert _fees("ETH") == Decimal("0.00023630085")
    assert loan.fees_collateral == Decimal("0.00023630085")
    # the borrower pays debt + penalty, as without a fee: 1 - 0.6054041095725 - 0.30270205478625
    assert bal(alice, "ETH") == Decimal("0.09189383564125")
    last = LoanEvent.objects.filter(request_id=loan.pk).last()
    assert "fee 0.000236300850000000 ETH" in last.reason
    ledger.ledger_seal_pending()
    from ledger.replay import verify_ledger

    assert verify_ledger().ok


def test_underwater_liquidation_takes_no_fee(fee_loan, alice):
    loan, big, small = fee_loan
    # given ETH at 1000 EUR: 1 ETH is worth 1086.956521 USDT, less than the 1504.109589 owed
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1000")
    # when
    assert services.loans_check_ltv()["liquidated"] == 1
    # then the lenders take all of it pro rata to 1002.739726 : 501.369863 (exactly 2 : 1), the
    # platform nothing, and the shortfall is 1504.109589 - 1086.956521
    loan.refresh_from_db()
    assert bal(big, "ETH") == Decimal("0.666666666666666666")
    assert bal(small, "ETH") == Decimal("0.333333333333333334")
    assert bal(alice, "ETH") == 0
    assert _fees("ETH") == 0
    assert loan.fees_collateral == 0
    assert loan.shortfall == Decimal("417.153068")
