"""Lender offers: post (held at once), take in one step (an active one-lender loan), refusals
naming the field with nothing changed, withdrawal, and takers racing for the last amount."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from common.errors import ApplicationError
from conftest import require_postgres
from escrow.tests.test_concurrency import outcome, run_at_once
from ledger import services as ledger
from ledger.models import Transfer
from ledger.replay import verify_ledger
from lending import services
from lending.models import Loan, LoanOffer, LoanRequest
from lending.tests.helpers import bal, lenders
from marketplace.tests.factories import fund

ACCEPTS = [{"asset": "USDT", "max_ltv": "0.6"}]


def post_offer(lender, amount="2", collateral=None, **kw):
    values = {
        "asset": "ETH", "amount": amount, "annual_rate": "5", "term_min": 3, "term_max": 12,
        "collateral": ACCEPTS if collateral is None else collateral,
    }  # fmt: skip
    values.update(kw)
    return services.loan_offer_create(lender=lender, **values)


def take(offer, borrower, **kw):
    values = {
        "amount": "1", "term_months": 6, "plan": "amortized", "collateral_asset": "USDT",
        "collateral_amount": "6000",
    }  # fmt: skip
    values.update(kw)
    return services.loan_offer_take(offer_id=offer.pk, borrower=borrower, **values)


def sealed_ok() -> bool:
    ledger.ledger_seal_pending()
    return verify_ledger().ok


@pytest.mark.django_db
def test_post_holds_the_amount_and_take_makes_an_active_one_lender_loan(alice, bob, carol):
    fund(bob, "ETH", "3")
    offer = post_offer(bob)
    assert (offer.state, offer.available) == ("open", Decimal(2))
    assert bal(bob, "ETH") == Decimal(1)  # 2 held by the offer

    fund(alice, "USDT", "6000")
    loan = take(offer, alice)

    assert (loan.state, loan.principal, loan.term_months) == ("active", Decimal(1), 6)
    request = LoanRequest.objects.get(pk=loan.pk)
    assert (request.state, request.funded, request.offer_id) == ("active", Decimal(1), offer.pk)
    assert [c.lender_id for c in request.commitments.all()] == [bob.pk]
    expected = services.loan_schedule(
        principal=Decimal(1), annual_rate=Decimal(5), term_months=6, plan="amortized",
        precision=18, start=loan.activated_at,
    )  # fmt: skip
    rows = list(loan.installments.order_by("n"))
    assert [(i.principal, i.interest) for i in rows] == [
        (r.principal, r.interest) for r in expected
    ]
    assert sum(i.principal for i in rows) == Decimal(1)
    offer.refresh_from_db()
    assert (offer.state, offer.available, offer.hold.amount) == ("open", Decimal(1), Decimal(1))
    assert bal(bob, "ETH") == Decimal(1)  # 1 lent, 1 still held by the offer
    assert bal(alice, "ETH") == Decimal(1)
    assert bal(alice, "USDT") == 0
    assert sealed_ok()

    # the rest taken: the offer is taken, nothing held any more
    fund(carol, "USDT", "6000")
    take(offer, carol)
    offer.refresh_from_db()
    assert (offer.state, offer.available, offer.hold) == ("taken", 0, None)
    assert bal(bob, "ETH") == Decimal(1)
    assert sealed_ok()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": "2.5"}, "amount"),
        ({"collateral_amount": "4000"}, "collateral_amount"),  # LTV above the offer's 0.6
        ({"collateral_asset": "BTC"}, "collateral_asset"),  # not accepted by this offer
        ({"collateral_asset": "NOPE"}, "collateral_asset"),
        ({"term_months": 2}, "term_months"),  # below the offer's range
        ({"term_months": 13}, "term_months"),
        ({"plan": "weekly"}, "plan"),
        ({"amount": "0"}, "amount"),
    ],
)
def test_bad_takes_name_the_field_and_change_nothing(alice, bob, change, field):
    fund(bob, "ETH", "2")
    offer = post_offer(bob)
    fund(alice, "USDT", "6000")
    fund(alice, "BTC", "1")
    before = (Transfer.objects.count(), bal(alice, "USDT"), bal(bob, "ETH"))

    with pytest.raises(ApplicationError) as err:
        take(offer, alice, **change)

    assert field in err.value.fields, err.value
    assert field in str(err.value)
    assert (Transfer.objects.count(), bal(alice, "USDT"), bal(bob, "ETH")) == before
    offer.refresh_from_db()
    assert (offer.state, offer.available) == ("open", Decimal(2))
    assert not LoanRequest.objects.exists()


@pytest.mark.django_db
def test_the_offers_ltv_is_stricter_than_the_platforms(alice, bob):
    fund(bob, "ETH", "1")
    offer = post_offer(bob, amount="1", collateral=[{"asset": "USDT", "max_ltv": "0.3"}])
    fund(alice, "USDT", "6000")
    with pytest.raises(ApplicationError) as err:
        take(offer, alice)  # fine for LENDING_INITIAL_LTV, not for this offer
    assert "collateral_amount" in err.value.fields
    assert "0.3" in str(err.value)


@pytest.mark.django_db
def test_taking_your_own_offer_is_refused(bob):
    fund(bob, "ETH", "2")
    fund(bob, "USDT", "6000")
    offer = post_offer(bob)
    with pytest.raises(ApplicationError) as err:
        take(offer, bob)
    assert "offer" in err.value.fields
    assert bal(bob, "USDT") == Decimal(6000)
    assert not LoanRequest.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": "-1"}, "amount"),
        ({"amount": "5"}, "amount"),  # more than the wallet holds
        ({"annual_rate": "0"}, "annual_rate"),
        ({"term_min": 0}, "term_min"),
        ({"term_max": 25}, "term_max"),
        ({"term_min": 12, "term_max": 3}, "term_max"),
        ({"collateral": []}, "collateral"),
        ({"collateral": [{"asset": "USDT"}]}, "collateral"),
        ({"collateral": [{"asset": "ETH", "max_ltv": "0.5"}]}, "collateral"),
        ({"collateral": [{"asset": "USDT", "max_ltv": "1.5"}]}, "collateral"),
        ({"collateral": [{"asset": "USDT", "max_ltv": 0.5}]}, "collateral"),  # a float
        ({"collateral": ACCEPTS * 2}, "collateral"),
        ({"collateral": "USDT"}, "collateral"),
    ],
)
def test_bad_offers_name_the_field_and_hold_nothing(bob, change, field):
    fund(bob, "ETH", "2")
    with pytest.raises(ApplicationError) as err:
        post_offer(bob, **change)
    assert field in err.value.fields, err.value
    assert not LoanOffer.objects.exists()
    assert bal(bob, "ETH") == Decimal(2)


@pytest.mark.django_db
def test_cancel_voids_what_is_left(alice, bob, carol):
    fund(bob, "ETH", "2")
    offer = post_offer(bob)
    fund(alice, "USDT", "6000")
    take(offer, alice)
    with pytest.raises(ApplicationError):
        services.loan_offer_cancel(offer_id=offer.pk, actor=carol)

    services.loan_offer_cancel(offer_id=offer.pk, actor=bob)

    offer.refresh_from_db()
    assert (offer.state, offer.hold, offer.available) == ("cancelled", None, Decimal(1))
    assert bal(bob, "ETH") == Decimal(1)  # the untaken 1 ETH is back
    with pytest.raises(ApplicationError) as err:
        take(offer, alice, amount="0.5")
    assert "state" in err.value.fields
    assert sealed_ok()


@pytest.mark.django_db
def test_the_api_lists_filters_creates_takes_and_cancels(alice, bob):
    lender, borrower = APIClient(), APIClient()
    lender.force_authenticate(bob)
    borrower.force_authenticate(alice)
    fund(bob, "ETH", "2")
    body = {"asset": "ETH", "amount": "2", "annual_rate": "5", "term_min": 3, "term_max": 12,
            "collateral": ACCEPTS}  # fmt: skip
    created = lender.post("/api/v1/loan-offers/", body, format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert data["available"] == "2.000000000000000000"
    assert data["collateral"] == [{"asset": "USDT", "max_ltv": "0.6000"}]
    listed = borrower.get("/api/v1/loan-offers/", {"asset": "ETH", "max_rate": "6"}).json()
    assert [o["id"] for o in listed["results"]] == [data["id"]]
    assert borrower.get("/api/v1/loan-offers/", {"max_rate": "4"}).json()["results"] == []
    assert borrower.get("/api/v1/loan-offers/", {"asset": "BTC"}).json()["results"] == []
    assert borrower.get(f"/api/v1/loan-offers/{data['id']}/").json()["id"] == data["id"]

    fund(alice, "USDT", "6000")
    url = f"/api/v1/loan-offers/{data['id']}/take/"
    too_much = borrower.post(url, {"amount": "3", "term_months": 6, "collateral_asset": "USDT",
                                   "collateral_amount": "6000"}, format="json")  # fmt: skip
    assert too_much.status_code == 400
    assert "amount" in too_much.json()["error"]["fields"]
    taken = borrower.post(url, {"amount": "1", "term_months": 6, "collateral_asset": "USDT",
                                "collateral_amount": "6000"}, format="json")  # fmt: skip
    assert taken.status_code == 201, taken.json()
    assert (taken.json()["state"], len(taken.json()["schedule"])) == ("active", 6)
    assert borrower.post(f"/api/v1/loan-offers/{data['id']}/cancel/").status_code == 403
    cancelled = lender.post(f"/api/v1/loan-offers/{data['id']}/cancel/")
    assert cancelled.json()["state"] == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_ten_takers_racing_for_the_last_amount_never_overdraw(bob):
    require_postgres()
    # given an offer of 1 ETH with 0.9 already taken
    fund(bob, "ETH", "1")
    offer = post_offer(bob, amount="1")
    (first,) = lenders("6000", asset="USDT", prefix="first")
    take(offer, first, amount="0.9", collateral_amount="6000")
    takers = lenders(*["1000"] * 10, asset="USDT", prefix="taker")

    # when ten borrowers each try to take 0.04 of the last 0.1 at once
    results = run_at_once(
        [
            lambda user=user: take(offer, user, amount="0.04", collateral_amount="1000")
            for user in takers
        ]
    )

    # then two win, the rest are refused cleanly, and the offer is never overdrawn
    outcomes = Counter(outcome(r) for r in results)
    assert outcomes["ok"] == 2, outcomes
    assert not [o for o in outcomes if o.startswith("CRASH")], outcomes
    offer.refresh_from_db()
    assert (offer.state, offer.available) == ("open", Decimal("0.02"))
    assert sum(Loan.objects.values_list("principal", flat=True)) == Decimal("0.98")
    assert offer.hold.amount == Decimal("0.02")
    assert bal(bob, "ETH") == 0
    assert sorted(bal(u, "ETH") for u in takers) == [0] * 8 + [Decimal("0.04")] * 2
    assert sealed_ok()
