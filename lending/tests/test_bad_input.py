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


# --- the same through the API: a 400/403/404 JSON error naming the field, nothing changed -------


def _client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def _request_body(**overrides) -> dict:
    body = {
        "asset": "ETH", "amount": "1", "annual_rate": "5", "term_months": 6,
        "plan": "amortized", "collateral_asset": "USDT", "collateral_amount": "6000",
        "funding_deadline": (timezone.now() + timedelta(days=1)).isoformat(),
    }  # fmt: skip
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-1"}, "amount"),
        ({"annual_rate": "0"}, "annual_rate"),
        ({"annual_rate": "-5"}, "annual_rate"),
        ({"term_months": 0}, "term_months"),
        ({"term_months": -3}, "term_months"),
        ({"term_months": 25}, "term_months"),
        ({"collateral_amount": "0"}, "collateral_amount"),
        ({"collateral_amount": "-10"}, "collateral_amount"),
        ({"collateral_amount": "4000"}, "collateral_amount"),  # LTV above 0.65
        ({"collateral_asset": "ETH"}, "collateral_asset"),
    ],
)
def test_api_request_refused_naming_the_field(alice, override, field):
    fund(alice, "USDT", "6000")
    before = Transfer.objects.count()
    response = _client(alice).post("/api/v1/loan-requests/", _request_body(**override),
                                   format="json")  # fmt: skip
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert field in error["fields"], error
    assert not LoanRequest.objects.exists()
    assert Transfer.objects.count() == before
    assert bal(alice, "USDT") == Decimal("6000")


def test_api_funding_own_request_and_more_than_is_left_refused(open_request, alice, bob):
    fund(alice, "ETH", "1")
    fund(bob, "ETH", "2")
    before = Transfer.objects.count()
    url = f"/api/v1/loan-requests/{open_request.pk}/fund/"
    own = _client(alice).post(url, {"amount": "0.5"}, format="json")
    assert own.status_code == 403, own.json()
    assert "request" in own.json()["error"]["fields"]
    for amount in ("1.5", "0", "-0.1"):
        refused = _client(bob).post(url, {"amount": amount}, format="json")
        assert refused.status_code == 400, refused.json()
        assert "amount" in refused.json()["error"]["fields"], refused.json()
    _unchanged(open_request, before)
    assert (bal(alice, "ETH"), bal(bob, "ETH")) == (1, 2)


@pytest.fixture
def active_loan(open_request):
    (lender,) = lenders("1")
    services.loan_request_fund(request_id=open_request.pk, lender=lender, amount="1")
    return open_request.loan, lender


def _loan_unchanged(loan, transfers: int) -> None:
    state, collateral = loan.state, loan.collateral_amount
    loan.refresh_from_db()
    assert (loan.state, loan.collateral_amount) == (state, collateral)
    assert Transfer.objects.count() == transfers


@pytest.mark.parametrize("amount", ["0", "-5", "abc", "0.0000001"])
def test_adding_bad_collateral_refused_naming_the_amount(active_loan, alice, amount):
    loan, _ = active_loan
    fund(alice, "USDT", "100")
    before = Transfer.objects.count()
    with pytest.raises(ApplicationError) as caught:
        services.loan_add_collateral(loan_id=loan.pk, actor=alice, amount=amount)
    assert "amount" in caught.value.fields
    response = _client(alice).post(f"/api/v1/loans/{loan.pk}/collateral/", {"amount": amount},
                                   format="json")  # fmt: skip
    assert response.status_code == 400, response.json()
    assert "amount" in response.json()["error"]["fields"]
    _loan_unchanged(loan, before)
    assert bal(alice, "USDT") == 100


def test_api_acting_on_another_s_loan_refused(active_loan, alice, bob):
    loan, lender = active_loan
    fund(bob, "USDT", "100")
    fund(bob, "ETH", "2")
    before = Transfer.objects.count()
    # a stranger is told the loan does not exist, naming it
    for path, body in (("repay/", None), ("collateral/", {"amount": "100"})):
        response = _client(bob).post(f"/api/v1/loans/{loan.pk}/{path}", body, format="json")
        assert response.status_code == 404, response.json()
        assert "loan" in response.json()["error"]["fields"]
    assert _client(bob).get(f"/api/v1/loans/{loan.pk}/").status_code == 404
    # a lender may read the loan but not repay it or pledge for it
    for path, body in (("repay/", None), ("collateral/", {"amount": "100"})):
        response = _client(lender).post(f"/api/v1/loans/{loan.pk}/{path}", body, format="json")
        assert response.status_code == 403, response.json()
    # nor cancel the borrower's request, nor can a stranger
    cancel = _client(bob).post(f"/api/v1/loan-requests/{loan.pk}/cancel/")
    assert cancel.status_code in (403, 409), cancel.json()
    _loan_unchanged(loan, before)
    assert (bal(bob, "USDT"), bal(bob, "ETH")) == (100, 2)
    assert bal(alice, "USDT") == 0


def test_api_cancelling_another_s_request_refused(open_request, bob):
    before = Transfer.objects.count()
    response = _client(bob).post(f"/api/v1/loan-requests/{open_request.pk}/cancel/")
    assert response.status_code == 403, response.json()
    _unchanged(open_request, before)
