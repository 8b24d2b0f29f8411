"""Moderators' screens of lending: loans at risk by LTV, a loan's events and transfers, and the
"pause liquidations" switch that the liquidation service honours."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command

from accounts.tests.factories import UserFactory
from common.errors import PermissionDenied
from lending import selectors, services
from lending.models import LendingControlChange, Loan, LoanEvent, LoanRequest
from lending.tests.helpers import bal, lenders, request_example
from marketplace.services import price_index_set
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

AT_RISK = "/admin/lending/loan/at-risk/"
PAUSE = "/admin/lending/loan/liquidations/"


@pytest.fixture
def moderator(refdata):
    user = UserFactory(username="mod", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return UserFactory._meta.model.objects.get(pk=user.pk)  # a fresh permission cache


@pytest.fixture
def usdt_loan(alice):
    """1500 USDT borrowed against 1 ETH (ETH 3000 EUR, USDT 0.92 EUR: LTV 0.4667)."""
    fund(alice, "ETH", "1")
    request = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                              collateral_amount="1")  # fmt: skip
    (lender,) = lenders("1500", asset="USDT")
    services.loan_request_fund(request_id=request.pk, lender=lender, amount="1500")
    return Loan.objects.get(pk=request.pk), lender


def test_paused_liquidations_leave_a_crashed_loan_as_it_is_until_resumed(
    usdt_loan, alice, moderator
):
    # given a moderator pauses liquidations (the price feed is broken)
    loan, lender = usdt_loan
    services.liquidations_set_paused(paused=True, actor=moderator, reason="ETH feed stuck")
    # when ETH crashes to 1600 EUR (LTV 0.875, past 0.83) and the LTV check runs
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1600")
    result = services.loans_check_ltv()
    # then nothing is liquidated, the loan is as it was, and the check recorded why
    loan.refresh_from_db()
    assert result["liquidated"] == 0
    assert (loan.state, loan.collateral_amount) == ("active", Decimal("1"))
    assert bal(lender, "ETH") == 0
    last = LoanEvent.objects.filter(request_id=loan.pk).last()
    assert (last.old_state, last.new_state) == ("active", "active")
    assert "liquidations paused by moderators: ETH feed stuck" in last.reason
    # when the moderator resumes and the check runs again
    services.liquidations_set_paused(paused=False, actor=moderator)
    result = services.loans_check_ltv()
    # then the loan is liquidated, and both switches are in the audit trail
    loan.refresh_from_db()
    assert result["liquidated"] == 1
    assert loan.state == "liquidated"
    assert bal(lender, "ETH") > 0
    assert list(
        LendingControlChange.objects.order_by("pk").values_list("liquidations_paused", "actor")
    ) == [(True, moderator.pk), (False, moderator.pk)]


def test_only_a_moderator_pauses_liquidations(usdt_loan, bob):
    # given staff without the moderators' permission
    clerk = UserFactory(username="clerk", is_staff=True)
    # when either tries the switch
    # then it is refused, and nothing is paused or audited
    for user in (bob, clerk):
        with pytest.raises(PermissionDenied):
            services.liquidations_set_paused(paused=True, actor=user, reason="no")
    assert services.liquidations_paused() is None
    assert not LendingControlChange.objects.exists()


def test_loans_at_risk_sorted_by_ltv_and_the_switch_in_the_admin(
    usdt_loan, alice, moderator, client
):
    # given two open loans of LTV 0.4667, the first topped up with 1 ETH (LTV about 0.23)
    loan, _ = usdt_loan
    fund(alice, "ETH", "2")
    risky = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                            collateral_amount="1")  # fmt: skip
    (other,) = lenders("1500", asset="USDT", prefix="other")
    services.loan_request_fund(request_id=risky.pk, lender=other, amount="1500")
    services.loan_add_collateral(loan_id=loan.pk, actor=alice, amount="1")
    # when the selector and the moderator's page list them
    rows = selectors.loans_at_risk()
    client.force_login(moderator)
    page = client.get(AT_RISK)
    # then the riskier loan comes first, on both
    assert [r.loan.pk for r in rows] == [risky.pk, loan.pk]
    assert rows[0].ltv > rows[1].ltv
    assert selectors.loans_at_risk(min_ltv=Decimal("0.4")) == rows[:1]
    html = page.content.decode()
    assert page.status_code == 200
    assert html.index(f"#{risky.pk}<") < html.index(f"#{loan.pk}<")
    assert "Liquidations: running" in html
    # when the moderator pauses liquidations from the page
    response = client.post(PAUSE, {"action": "pause", "reason": "feed down"})
    # then the switch is on, and the page says so
    assert response.status_code == 302
    assert services.liquidations_paused().reason == "feed down"
    assert "PAUSED" in client.get(AT_RISK).content.decode()


def test_a_non_moderator_cannot_use_the_switch_from_the_admin(usdt_loan, client):
    # given staff without the moderators' permission
    clerk = UserFactory(username="clerk", is_staff=True)
    client.force_login(clerk)
    # when they open the page and post the switch
    page = client.get(AT_RISK)
    client.post(PAUSE, {"action": "pause", "reason": "x"})
    # then neither works
    assert page.status_code == 403
    assert services.liquidations_paused() is None


def test_a_liquidated_loan_shows_its_prices_events_and_every_transfer(usdt_loan, moderator, client):
    # given a loan liquidated after a crash
    loan, _ = usdt_loan
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1600")
    services.loans_check_ltv()
    # when a moderator filters liquidated loans and opens it
    client.force_login(moderator)
    listing = client.get("/admin/lending/loan/", {"state": "liquidated"}).content.decode()
    detail = client.get(f"/admin/lending/loan/{loan.pk}/change/").content.decode()
    # then the filter lists it, and its page shows the liquidation's prices and every transfer
    assert f"/admin/lending/loan/{loan.pk}/change/" in listing
    assert "EUR USDT 0.92000000 / ETH 1600.00000000" in detail
    transfers = selectors.loan_transfers(loan_id=loan.pk)
    kinds = set(transfers.values_list("kind", flat=True))
    assert {"loan_collateral", "loan_funding", "loan_liquidation"} <= kinds
    for t in transfers:
        assert f"<td>{t.pk}</td>" in detail


def test_demo_loans_are_seeded_once(refdata):
    # given the demo traders
    call_command("seed_demo", stdout=StringIO())
    # when the demo loans are seeded twice
    first, second = StringIO(), StringIO()
    call_command("seed_lending_demo", stdout=first)
    call_command("seed_lending_demo", stdout=second)
    # then there is one open request of the example, partly funded by bob ...
    assert "demo loans already present" in second.getvalue()
    assert LoanRequest.objects.count() == 2
    example = LoanRequest.objects.get(state="open")
    assert (example.borrower.username, example.asset.code, example.amount) == ("alice", "ETH", 1)
    assert (example.annual_rate, example.term_months, example.collateral_asset.code) == (
        5,
        6,
        "USDT",
    )
    assert example.funded == Decimal("0.4")
    assert list(example.commitments.values_list("lender__username", flat=True)) == ["bob"]
    # ... and one active loan with exactly one installment paid
    loan = Loan.objects.get()
    assert (loan.state, loan.borrower.username) == ("active", "bob")
    assert list(loan.installments.values_list("status", flat=True)) == ["paid", "due", "due"]
