"""The lending pages of the browser UI, driven through Django's test client the way a browser
posts its forms: every page renders, each form goes through lending.services, bad input shows the
field's error and changes nothing, and a stranger's loan is a 404."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from common.money import fmt
from common.templatetags.money import amount, amount_shown
from ledger import services as ledger
from lending import services
from lending.models import Installment, Loan, LoanCommitment, LoanRequest
from lending.tests.helpers import at, bal, request_example
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

R, L = LoanRequest.State, Loan.State

BORROW = {
    "asset": "ETH",
    "amount": "1",
    "annual_rate": "5",
    "term_months": "6",
    "plan": "amortized",
    "collateral_asset": "USDT",
    "collateral_amount": "6000",
    "funding_window": "72",
}


def login(client, user):
    client.force_login(user)
    return client


def active_loan(borrower, lender) -> Loan:
    """The issue's example, funded in full by one lender."""
    fund(borrower, "USDT", "6000")
    fund(lender, "ETH", "1")
    req = request_example(borrower)
    services.loan_request_fund(request_id=req.pk, lender=lender, amount="1")
    return Loan.objects.get(pk=req.pk)


# --- borrow -----------------------------------------------------------------------------------


def test_borrow_page_shows_the_form_and_a_preview_of_the_defaults(client, alice):
    login(client, alice)
    page = client.get(reverse("lending:borrow"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="borrow-form"' in html
    assert reverse("lending:borrow_preview") in html  # htmx asks it as the form changes
    assert "Enter the amount" in html  # nothing computed before an amount is typed


def test_preview_shows_the_services_schedule_ltv_and_collateral_needed(client, alice):
    # given
    fund(alice, "USDT", "7000")
    login(client, alice)
    # when
    page = client.get(reverse("lending:borrow_preview"), BORROW)
    # then: every figure is the services' own
    assert page.status_code == 200
    html = page.content.decode()
    eth, usdt = 18, 6
    rows = services.loan_schedule(
        principal=Decimal(1), annual_rate=Decimal(5), term_months=6, plan="amortized",
        precision=eth, start=timezone.now(),
    )  # fmt: skip
    assert html.count('class="installment') == 6
    for r in rows:
        assert amount(r.principal, eth) in html
        assert amount(r.interest, eth) in html
    interest = sum((r.interest for r in rows), Decimal(0))
    assert amount(Decimal(1) + interest, eth) in html
    from ledger.models import Asset

    ltv, needed = services.loan_ltv_quote(
        asset=Asset.objects.get(code="ETH"), collateral_asset=Asset.objects.get(code="USDT"),
        principal=Decimal(1), annual_rate=Decimal(5), term_months=6, plan="amortized",
        collateral_amount=Decimal(6000),
    )  # fmt: skip
    assert f"{ltv * 100:.2f}%" in html
    # Shown at USDT's display precision (the exact amount is the span's title).
    text = re.sub(r"<[^>]+>", "", html)
    usdt_asset = Asset.objects.get(code="USDT")
    assert amount(needed, usdt) in html
    assert f"{amount_shown(needed, usdt_asset)} USDT" in text
    assert "Enough collateral" in html
    assert f"l-{int(settings.LENDING_MARGIN_CALL_LTV * 100)}" in html
    assert f"l-{int(settings.LENDING_LIQUIDATION_LTV * 100)}" in html
    assert f"{amount_shown(Decimal(7000), usdt_asset)} USDT" in text  # the balance to put up


def test_preview_names_the_field_typed_wrong(client, alice):
    login(client, alice)
    page = client.get(reverse("lending:borrow_preview"), {**BORROW, "amount": "-1"})
    assert page.status_code == 200  # htmx swaps a 200; the error is part of the preview
    html = page.content.decode()
    assert "<strong>Amount:</strong> Must be greater than zero." in html
    assert 'class="installment' not in html

    low = client.get(reverse("lending:borrow_preview"), {**BORROW, "collateral_amount": "1000"})
    assert "Too little collateral" in low.content.decode()

    rate = client.get(reverse("lending:borrow_preview"), {**BORROW, "annual_rate": "abc"})
    assert "<strong>Annual interest rate:</strong>" in rate.content.decode()


def test_borrow_creates_the_request_with_its_collateral_held(client, alice):
    fund(alice, "USDT", "6500")
    login(client, alice)
    response = client.post(reverse("lending:borrow"), BORROW)
    req = LoanRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("lending:request_detail", kwargs={"pk": req.pk})
    assert (req.borrower, req.amount, req.state) == (alice, Decimal(1), R.OPEN)
    assert req.collateral_amount == Decimal(6000)
    assert bal(alice, "USDT") == Decimal(500)  # 6000 held
    hours = (req.funding_deadline - timezone.now()).total_seconds() / 3600
    assert 71 < hours <= 72


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"collateral_amount": "1000"}, "collateral_amount", "at least"),
        ({"amount": "0"}, "amount", "Must be greater than zero."),
        ({"amount": "abc"}, "amount", ""),
        ({"annual_rate": "0"}, "annual_rate", "Must be greater than zero."),
        ({"annual_rate": "101"}, "annual_rate", "At most 100"),
        ({"collateral_asset": "ETH"}, "collateral_asset", "Must differ"),
        ({"collateral_amount": "-5"}, "collateral_amount", "Must be greater than zero."),
        ({"allow_partial": "on"}, "min_fill", "Required when a partial fill is acceptable."),
        ({"collateral_amount": "9000"}, "collateral_amount", "Insufficient balance."),
    ],
)
def test_bad_borrow_input_names_the_field_and_changes_nothing(
    client, alice, change, field, message
):
    fund(alice, "USDT", "8000")
    login(client, alice)
    response = client.post(reverse("lending:borrow"), {**BORROW, **change})
    assert response.status_code in (400, 409)
    html = response.content.decode()
    errors = response.context["form"].errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert f'id="field-{field}"' in html
    assert "has-error" in html
    assert not LoanRequest.objects.exists()
    assert bal(alice, "USDT") == Decimal(8000)


# --- lend -------------------------------------------------------------------------------------


def test_lend_lists_open_requests_with_filters(client, alice, bob, carol):
    # given: three requests with different rates, terms, assets and LTVs
    fund(alice, "USDT", "30000")
    fund(carol, "USDT", "30000")
    fund(carol, "BTC", "1")
    cheap = request_example(alice, annual_rate="3", term_months=3)  # LTV about 0.55
    dear = request_example(carol, annual_rate="12", term_months=12, collateral_amount="9000")
    btc = request_example(
        carol, asset="BTC", amount="0.01", annual_rate="4", collateral_amount="2000"
    )
    login(client, bob)

    def listed(**query: str) -> list[int]:
        page = client.get(reverse("lending:lend"), query)
        assert page.status_code == 200
        return [row["req"].pk for row in page.context["rows"]]

    # then
    assert listed() == [btc.pk, dear.pk, cheap.pk]
    assert listed(asset="ETH") == [dear.pk, cheap.pk]
    assert listed(min_rate="5") == [dear.pk]
    assert listed(max_term="6") == [btc.pk, cheap.pk]
    assert listed(max_ltv="50") == [btc.pk, dear.pk]  # cheap's LTV is above 50 %
    bad = client.get(reverse("lending:lend"), {"min_rate": "abc"})
    assert bad.status_code == 200
    assert "min_rate" in bad.context["filters"].errors
    assert reverse("lending:request_detail", kwargs={"pk": cheap.pk}) in bad.content.decode()


def test_lend_paginates(client, alice, bob):
    fund(alice, "USDT", "200000")
    for _ in range(21):
        request_example(alice, collateral_amount="6000")
    login(client, bob)
    first = client.get(reverse("lending:lend"))
    assert len(first.context["rows"]) == 20
    assert 'rel="next"' in first.content.decode()
    second = client.get(reverse("lending:lend"), {"page": "2"})
    assert len(second.context["rows"]) == 1


def test_request_detail_shows_terms_schedule_and_the_fund_form(client, alice, bob):
    fund(alice, "USDT", "6000")
    req = request_example(alice)
    login(client, bob)
    page = client.get(reverse("lending:request_detail", kwargs={"pk": req.pk}))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="installment') == 6
    assert 'id="fund-form"' in html
    assert "Cancel request" not in html
    assert client.get(reverse("lending:request_detail", kwargs={"pk": 999999})).status_code == 404


def test_funding_with_a_chosen_amount(client, alice, bob):
    # given
    fund(alice, "USDT", "6000")
    fund(bob, "ETH", "2")
    req = request_example(alice)
    login(client, bob)
    url = reverse("lending:request_fund", kwargs={"pk": req.pk})
    # when
    response = client.post(url, {"amount": "0.4"})
    # then
    assert response.status_code == 302
    req.refresh_from_db()
    assert req.funded == Decimal("0.4")
    assert LoanCommitment.objects.get(request=req).lender == bob
    assert bal(bob, "ETH") == Decimal("1.6")
    page = client.get(reverse("lending:request_detail", kwargs={"pk": req.pk}))
    assert "Your commitment is held" in page.content.decode()


def test_funding_more_than_is_left_names_the_amount_and_changes_nothing(client, alice, bob):
    fund(alice, "USDT", "6000")
    fund(bob, "ETH", "2")
    req = request_example(alice)
    login(client, bob)
    response = client.post(
        reverse("lending:request_fund", kwargs={"pk": req.pk}), {"amount": "1.5"}
    )
    assert response.status_code == 400
    assert response.context["fund_form"].errors["amount"] == [f"At most {fmt(Decimal(1), 18)}."]
    assert "has-error" in response.content.decode()
    req.refresh_from_db()
    assert req.funded == 0
    assert bal(bob, "ETH") == Decimal(2)


def test_funding_your_own_request_is_refused(client, alice):
    fund(alice, "USDT", "6000")
    fund(alice, "ETH", "1")
    req = request_example(alice)
    login(client, alice)
    response = client.post(
        reverse("lending:request_fund", kwargs={"pk": req.pk}), {"amount": "0.5"}
    )
    assert response.status_code == 403
    assert "You can&#x27;t fund your own loan request." in response.content.decode()
    assert not LoanCommitment.objects.exists()
    assert bal(alice, "ETH") == Decimal(1)


def test_the_last_part_activates_the_loan_and_opens_it(client, alice, bob):
    fund(alice, "USDT", "6000")
    fund(bob, "ETH", "1")
    req = request_example(alice)
    login(client, bob)
    response = client.post(reverse("lending:request_fund", kwargs={"pk": req.pk}), {"amount": "1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("lending:loan_detail", kwargs={"pk": req.pk})
    assert Loan.objects.get(pk=req.pk).state == L.ACTIVE
    assert bal(alice, "ETH") == Decimal(1)


def test_the_borrower_cancels_an_open_request(client, alice, bob):
    fund(alice, "USDT", "6000")
    req = request_example(alice)
    url = reverse("lending:request_cancel", kwargs={"pk": req.pk})
    # a stranger can't
    login(client, bob)
    assert client.post(url).status_code == 404
    req.refresh_from_db()
    assert req.state == R.OPEN
    # the borrower sees the button and uses it
    login(client, alice)
    page = client.get(reverse("lending:request_detail", kwargs={"pk": req.pk}))
    assert "Cancel request" in page.content.decode()
    assert client.post(url).status_code == 302
    req.refresh_from_db()
    assert req.state == R.CANCELLED
    assert bal(alice, "USDT") == Decimal(6000)


# --- my loans ---------------------------------------------------------------------------------


def test_my_loans_as_borrower_and_as_lender(client, alice, bob, carol):
    # given: alice borrows from bob; alice also has an open request bob partly funds
    loan = active_loan(alice, bob)
    fund(alice, "USDT", "6000")
    fund(bob, "ETH", "0.3")
    open_req = request_example(alice)
    services.loan_request_fund(request_id=open_req.pk, lender=bob, amount="0.3")
    # when
    login(client, alice)
    mine = client.get(reverse("lending:my_loans"))
    # then: the borrower's card with gauge, next due date and the two forms
    assert mine.status_code == 200
    html = mine.content.decode()
    assert [c["loan"].pk for c in mine.context["borrowed"]] == [loan.pk]
    card = mine.context["borrowed"][0]
    first = loan.installments.order_by("n").first()
    assert card["next_due"] == first
    assert card["gauge"]["zone"] == "ok"
    assert f"l-{int(settings.LENDING_MARGIN_CALL_LTV * 100)}" in html
    assert f"l-{int(settings.LENDING_LIQUIDATION_LTV * 100)}" in html
    assert f"w-{card['gauge']['fill']}" in html
    assert "Add collateral" in html
    assert "Repay early" in html
    assert html.count('class="installment inst-due"') == 6
    assert [r.pk for r in mine.context["requests"]] == [open_req.pk]

    login(client, bob)
    lender = client.get(reverse("lending:my_loans"))
    assert [c["loan"].pk for c in lender.context["lent"]] == [loan.pk]
    assert lender.context["lent"][0]["my_share"] == Decimal(1)
    assert [c.request_id for c in lender.context["commitments"]] == [open_req.pk]
    assert "Repay early" not in lender.content.decode()

    login(client, carol)
    assert client.get(reverse("lending:my_loans")).context["borrowed"] == []


def test_loan_detail_shows_the_history(client, alice, bob):
    loan = active_loan(alice, bob)
    login(client, bob)
    page = client.get(reverse("lending:loan_detail", kwargs={"pk": loan.pk}))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="events"' in html
    assert "Loan active" in html or "loan" in html.lower()
    assert len(page.context["events"]) >= 2  # the request opened, the loan started


def test_adding_collateral(client, alice, bob):
    loan = active_loan(alice, bob)
    fund(alice, "USDT", "500")
    login(client, alice)
    url = reverse("lending:loan_add_collateral", kwargs={"pk": loan.pk})
    response = client.post(url, {"amount": "400"})
    assert response.status_code == 302
    loan.refresh_from_db()
    assert loan.collateral_amount == Decimal(6400)
    assert bal(alice, "USDT") == Decimal(100)

    bad = client.post(url, {"amount": "-3"})
    assert bad.status_code == 400
    assert "amount" in bad.context["card"]["collateral_form"].errors
    too_much = client.post(url, {"amount": "200"})
    assert too_much.status_code == 409
    loan.refresh_from_db()
    assert loan.collateral_amount == Decimal(6400)
    assert bal(alice, "USDT") == Decimal(100)


def test_repaying_early_pays_the_quote_shown(client, alice, bob, monkeypatch):
    loan = active_loan(alice, bob)
    fund(alice, "ETH", "0.1")  # the interest on top of the principal
    at(monkeypatch, timezone.now() + timedelta(days=10))
    login(client, alice)
    page = client.get(reverse("lending:loan_detail", kwargs={"pk": loan.pk}))
    payoff = page.context["card"]["payoff"]
    assert payoff.days == 10
    total = fmt(payoff.total, 18)
    assert amount(payoff.total, 18) in page.content.decode()
    url = reverse("lending:loan_repay", kwargs={"pk": loan.pk})

    # a quote that is no longer the payoff is shown again, nothing paid
    stale = client.post(url, {"quoted_total": fmt(payoff.total - Decimal("0.001"), 18)})
    assert stale.status_code == 409
    assert "The payoff is now" in stale.content.decode()
    loan.refresh_from_db()
    assert loan.state == L.ACTIVE

    response = client.post(url, {"quoted_total": total})
    assert response.status_code == 302
    loan.refresh_from_db()
    assert loan.state == L.REPAID
    assert bal(bob, "ETH") == payoff.total
    assert bal(alice, "USDT") == Decimal(6000)
    assert not loan.installments.filter(status=Installment.Status.DUE).exists()


def test_another_users_loan_is_404(client, alice, bob, carol):
    loan = active_loan(alice, bob)
    fund(carol, "USDT", "100")
    login(client, carol)
    pk = {"pk": loan.pk}
    assert client.get(reverse("lending:loan_detail", kwargs=pk)).status_code == 404
    assert (
        client.post(reverse("lending:loan_add_collateral", kwargs=pk), {"amount": "1"}).status_code
        == 404
    )
    assert (
        client.post(reverse("lending:loan_repay", kwargs=pk), {"quoted_total": "1"}).status_code
        == 404
    )
    loan.refresh_from_db()
    assert (loan.state, loan.collateral_amount) == (L.ACTIVE, Decimal(6000))


def test_a_lender_cannot_repay_or_top_up(client, alice, bob):
    loan = active_loan(alice, bob)
    fund(bob, "USDT", "100")
    login(client, bob)
    pk = {"pk": loan.pk}
    top_up = client.post(reverse("lending:loan_add_collateral", kwargs=pk), {"amount": "1"})
    assert top_up.status_code == 403
    repay = client.post(reverse("lending:loan_repay", kwargs=pk), {"quoted_total": "1"})
    assert repay.status_code == 403
    loan.refresh_from_db()
    assert (loan.state, loan.collateral_amount) == (L.ACTIVE, Decimal(6000))


def test_a_late_loan_shows_its_grace_deadline(client, alice, bob, monkeypatch):
    # given: the borrower withdrew what they borrowed, so the first installment can't be collected
    loan = active_loan(alice, bob)
    ledger.withdrawal_request(user=alice, asset_code="ETH", amount="1", address="0xaliceaddress")
    first = loan.installments.get(n=1)
    at(monkeypatch, first.due_at + timedelta(hours=1))
    services.loan_collect(loan_id=loan.pk)
    loan.refresh_from_db()
    assert loan.state == L.LATE
    # when
    login(client, alice)
    page = client.get(reverse("lending:my_loans"))
    # then
    deadline = loan.late_since + timedelta(hours=settings.LENDING_GRACE_HOURS)
    assert page.context["borrowed"][0]["grace_deadline"] == deadline
    html = page.content.decode()
    assert "Grace period until" in html
    assert f'datetime="{deadline.isoformat()}"' in html
    assert 'class="installment inst-missed"' in html


def test_taking_a_lender_offer_from_the_borrow_page(client, alice, bob):
    fund(bob, "ETH", "2")
    offer = services.loan_offer_create(
        lender=bob, asset="ETH", amount="2", annual_rate="6", term_min=3, term_max=12,
        collateral=[{"asset": "USDT", "max_ltv": "0.6"}],
    )  # fmt: skip
    fund(alice, "USDT", "6000")
    login(client, alice)
    page = client.get(reverse("lending:borrow"))
    assert f'id="offer-{offer.pk}"' in page.content.decode()
    url = reverse("lending:offer_take", kwargs={"offer_id": offer.pk})
    p = f"offer{offer.pk}-"
    data = {f"{p}amount": "1", f"{p}term_months": "6", f"{p}plan": "amortized",
            f"{p}collateral_asset": "USDT", f"{p}collateral_amount": "6000"}  # fmt: skip
    too_much = client.post(url, {**data, f"{p}amount": "3"})
    assert too_much.status_code == 400
    assert "Only 2" in too_much.content.decode()
    assert not Loan.objects.exists()
    response = client.post(url, data)
    assert response.status_code == 302
    loan = Loan.objects.get()
    assert (loan.borrower, loan.principal) == (alice, Decimal(1))


# --- disputes ----------------------------------------------------------------------------------


def test_a_party_opens_a_dispute_and_the_other_answers_on_the_loan_page(
    client, alice, bob, carol, django_capture_on_commit_callbacks
):
    loan = active_loan(alice, bob)
    url = reverse("lending:loan_dispute_open", kwargs={"pk": loan.pk})
    # too short: the field's error, nothing opened
    login(client, alice)
    page = client.post(url, {"category": "installment", "text": "bad"})
    assert page.status_code == 400
    assert "at least 10 characters" in page.content.decode()
    assert not loan.disputes.exists()
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(
            url, {"category": "installment", "text": "Installment 1 came out twice."}
        )
    assert page.status_code == 302
    dispute = loan.disputes.get()
    # the lender sees it on the loan page and answers
    login(client, bob)
    html = client.get(reverse("lending:loan_detail", kwargs={"pk": loan.pk})).content.decode()
    assert "Installment 1 came out twice." in html
    answer = reverse(
        "lending:loan_dispute_statement", kwargs={"pk": loan.pk, "dispute_id": dispute.pk}
    )
    assert client.post(answer, {"text": "The ledger shows one transfer."}).status_code == 302
    assert [s.role for s in dispute.statements.all()] == ["lender"]
    # a stranger can do neither
    login(client, carol)
    assert client.post(url, {"category": "other", "text": "I want in on this."}).status_code == 404
    assert client.post(answer, {"text": "I want in on this."}).status_code == 404
    # a loan notification opens the loan's page
    login(client, bob)
    note = bob.notifications.filter(loan=loan).first()
    assert note is not None
    assert client.post(reverse("notification_read", args=[note.pk])).url == reverse(
        "lending:loan_detail", kwargs={"pk": loan.pk}
    )
