"""Bad input gets a clear error naming the field, and nothing changes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from common.errors import ApplicationError, NotFound, PermissionDenied
from ledger.models import Transfer
from lending import services
from lending.models import LoanCommitment, LoanRequest
from lending.tests.helpers import bal, lenders, request_example
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-1"}, "amount"),
        ({"annual_rate": "0"}, "annual_rate"),
        ({"annual_rate": "-5"}, "annual_rate"),
        ({"annual_rate": "101"}, "annual_rate"),
        ({"term_months": 0}, "term_months"),
        ({"term_months": 25}, "term_months"),
        ({"term_months": "-3"}, "term_months"),
        ({"plan": "weekly"}, "plan"),
        ({"collateral_amount": "0"}, "collateral_amount"),
        ({"collateral_amount": "-10"}, "collateral_amount"),
        ({"collateral_asset": "ETH"}, "collateral_asset"),
        ({"collateral_asset": "DOGE"}, "collateral_asset"),
        ({"asset": "DOGE"}, "asset"),
        ({"collateral_amount": "4000"}, "collateral_amount"),  # LTV above 0.65
        ({"collateral_amount": "7000"}, "collateral_amount"),  # more than the wallet holds
        ({"funding_deadline": timezone.now() - timedelta(minutes=1)}, "funding_deadline"),
        ({"allow_partial": True}, "min_fill"),
        ({"allow_partial": True, "min_fill": "2"}, "min_fill"),
        ({"min_fill": "0.5"}, "min_fill"),
    ],
)
def test_request_refused_naming_the_field(alice, override, field):
    fund(alice, "USDT", "6000")
    with pytest.raises(ApplicationError) as caught:
        request_example(alice, **override)
    assert field in caught.value.fields, caught.value.message
    assert not LoanRequest.objects.exists()
    assert bal(alice, "USDT") == Decimal("6000")


@pytest.fixture
def open_request(alice):
    fund(alice, "USDT", "6000")
    return request_example(alice)


def _unchanged(request, transfers: int) -> None:
    request.refresh_from_db()
    assert (request.state, request.funded) == ("open", 0)
    assert not LoanCommitment.objects.exists()
    assert Transfer.objects.count() == transfers


def test_funding_own_request_refused(open_request, alice):
    fund(alice, "ETH", "1")
    before = Transfer.objects.count()
    with pytest.raises(PermissionDenied) as caught:
        services.loan_request_fund(request_id=open_request.pk, lender=alice, amount="0.5")
    assert "request" in caught.value.fields
    _unchanged(open_request, before)


@pytest.mark.parametrize("amount", ["1.5", "0", "-0.1", "abc", "0.0000000000000000001"])
def test_funding_bad_amounts_refused(open_request, amount):
    (lender,) = lenders("2")
    before = Transfer.objects.count()
    with pytest.raises(ApplicationError) as caught:
        services.loan_request_fund(request_id=open_request.pk, lender=lender, amount=amount)
    assert "amount" in caught.value.fields
    _unchanged(open_request, before)
    assert bal(lender, "ETH") == 2


def test_funding_more_than_the_wallet_refused(open_request):
    (lender,) = lenders("0.1")
    before = Transfer.objects.count()
    with pytest.raises(ApplicationError) as caught:
        services.loan_request_fund(request_id=open_request.pk, lender=lender, amount="0.5")
    assert caught.value.code == "insufficient_funds"
    _unchanged(open_request, before)


def test_acting_on_another_s_request_and_loan_refused(open_request, alice, bob):
    before = Transfer.objects.count()
    with pytest.raises(PermissionDenied):
        services.loan_request_cancel(request_id=open_request.pk, actor=bob)
    _unchanged(open_request, before)
    (lender,) = lenders("1")
    services.loan_request_fund(request_id=open_request.pk, lender=lender, amount="1")
    fund(bob, "USDT", "100")
    with pytest.raises(NotFound):
        services.loan_repay_early(loan_id=open_request.pk, actor=bob)
    with pytest.raises(NotFound):
        services.loan_add_collateral(loan_id=open_request.pk, actor=bob, amount="100")
    with pytest.raises(PermissionDenied):
        services.loan_repay_early(loan_id=open_request.pk, actor=lender)
    assert bal(bob, "USDT") == 100
    assert open_request.loan.state == "active"


def test_cancel_voids_every_hold(open_request, alice):
    (lender,) = lenders("0.4")
    services.loan_request_fund(request_id=open_request.pk, lender=lender, amount="0.4")
    services.loan_request_cancel(request_id=open_request.pk, actor=alice)
    open_request.refresh_from_db()
    assert open_request.state == "cancelled"
    assert bal(alice, "USDT") == 6000
    assert bal(lender, "ETH") == Decimal("0.4")


def test_deadline_expires_or_activates_a_partial_fill(alice, monkeypatch):
    from lending.tests.helpers import at

    fund(alice, "USDT", "12000")
    plain = request_example(alice)
    partial = request_example(alice, allow_partial=True, min_fill="0.5")
    a, b = lenders("0.6", "0.6")
    services.loan_request_fund(request_id=plain.pk, lender=a, amount="0.6")
    services.loan_request_fund(request_id=partial.pk, lender=b, amount="0.6")
    at(monkeypatch, plain.funding_deadline + timedelta(seconds=1))
    assert services.loan_requests_sweep() == 2
    plain.refresh_from_db()
    partial.refresh_from_db()
    assert (plain.state, partial.state) == ("expired", "active")
    assert partial.loan.principal == Decimal("0.6")
    assert bal(a, "ETH") == Decimal("0.6")
    assert bal(alice, "ETH") == Decimal("0.6")


def test_early_repayment_pays_accrued_interest_actual_365(alice, monkeypatch):
    from lending.tests.helpers import at

    fund(alice, "USDT", "6000")
    fund(alice, "ETH", "0.1")
    request = request_example(alice)
    (lender,) = lenders("1")
    services.loan_request_fund(request_id=request.pk, lender=lender, amount="1")
    loan = request.loan
    at(monkeypatch, loan.activated_at + timedelta(days=10, hours=3))
    services.loan_repay_early(loan_id=loan.pk, actor=alice)
    interest = (Decimal("0.05") * 10 / 365).quantize(Decimal("1e-18"), "ROUND_DOWN")
    assert bal(lender, "ETH") == 1 + interest
    assert bal(alice, "USDT") == 6000
    loan.refresh_from_db()
    assert loan.state == "repaid"
