"""The lending API: amounts as strings, the schedule before anyone commits, the JSON error."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_borrow_fund_and_read_the_loan(alice, bob):
    fund(alice, "USDT", "6000")
    body = {
        "asset": "ETH", "amount": "1", "annual_rate": "5", "term_months": 6,
        "plan": "amortized", "collateral_asset": "USDT", "collateral_amount": "6000",
        "funding_deadline": (timezone.now() + timedelta(days=1)).isoformat(),
    }  # fmt: skip
    created = client_for(alice).post("/api/v1/loan-requests/", body, format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert (data["amount"], data["state"]) == ("1.000000000000000000", "open")
    assert len(data["schedule"]) == 6
    assert data["schedule"][0]["interest"] == "0.004166666666666666"
    listed = client_for(bob).get("/api/v1/loan-requests/").json()
    assert [r["id"] for r in listed["results"]] == [data["id"]]

    # funding more than is left: the JSON error naming the field
    fund(bob, "ETH", "2")
    too_much = client_for(bob).post(
        f"/api/v1/loan-requests/{data['id']}/fund/", {"amount": "1.5"}, format="json"
    )
    assert too_much.status_code == 400
    assert "amount" in too_much.json()["error"]["fields"]
    funded = client_for(bob).post(
        f"/api/v1/loan-requests/{data['id']}/fund/", {"amount": "1"}, format="json"
    )
    assert funded.json()["state"] == "active"

    loan = client_for(bob).get(f"/api/v1/loans/{data['id']}/").json()
    assert loan["state"] == "active"
    assert loan["ltv"] is not None
    assert [r["status"] for r in loan["schedule"]] == ["due"] * 6
    assert client_for(alice).get("/api/v1/loans/").json()["results"][0]["id"] == data["id"]


def test_strangers_get_404_on_a_loan(alice, bob, carol):
    fund(alice, "USDT", "6000")
    from lending import services
    from lending.tests.helpers import request_example

    request = request_example(alice)
    fund(bob, "ETH", "1")
    services.loan_request_fund(request_id=request.pk, lender=bob, amount="1")
    response = client_for(carol).post(f"/api/v1/loans/{request.pk}/repay/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    cancel = client_for(carol).post(f"/api/v1/loan-requests/{request.pk}/cancel/")
    assert cancel.status_code == 409 or cancel.status_code == 403
