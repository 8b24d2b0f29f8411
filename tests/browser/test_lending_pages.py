"""The lending pages in headless Chromium, on a phone (390 px) and a desktop (1280 px): Borrow
with its live preview following the form, Lend with filters and funding, My loans with the LTV
gauge and an early repayment. Every figure checked is the services' own; no page scrolls
sideways and the controls that matter are on screen."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import Page, expect

from common.money import fmt
from common.templatetags.money import amount_shown
from ledger.models import Asset
from lending import services
from lending.models import Loan, LoanCommitment, LoanRequest
from lending.tests.helpers import bal, request_example
from marketplace.tests.factories import fund
from tests.browser.helpers import assert_not_reloaded, login, mark_no_reload, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = [390, 1280]


# The elements that stick out of the viewport on the right, to name them when a page scrolls.
STICKING_OUT = """() => Array.from(document.querySelectorAll("main *"))
  .filter((el) => el.getBoundingClientRect().right > window.innerWidth)
  .slice(-5)
  .map((el) => el.tagName.toLowerCase() + "." + el.className + " " + el.getBoundingClientRect().right)"""


def no_sideways_scroll(page: Page, name: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} scrolls sideways by {overflow}px: {page.evaluate(STICKING_OUT)}"


def quote(principal: str, collateral: str) -> tuple[str, str, str]:
    """(total repaid, LTV text, collateral needed) of ETH at 5 % over 6 months against USDT,
    from the services the preview calls."""
    eth, usdt = Asset.objects.get(code="ETH"), Asset.objects.get(code="USDT")
    rows = services.loan_schedule(
        principal=Decimal(principal), annual_rate=Decimal(5), term_months=6, plan="amortized",
        precision=18, start=timezone.now(),
    )  # fmt: skip
    total = Decimal(principal) + sum((r.interest for r in rows), Decimal(0))
    ltv, needed = services.loan_ltv_quote(
        asset=eth, collateral_asset=usdt, principal=Decimal(principal), annual_rate=Decimal(5),
        term_months=6, plan="amortized", collateral_amount=Decimal(collateral),
    )  # fmt: skip
    # As the pages show them: at each asset's display precision (the exact one on hover).
    return amount_shown(total, eth), f"{ltv * 100:.2f}%", amount_shown(needed, usdt)


@pytest.mark.parametrize("width", WIDTHS)
def test_borrow_with_a_live_preview(open_page, width, alice):
    fund(alice, "USDT", "7000")
    page = login(open_page(width=width), "alice")
    page.goto("/lending/borrow/")
    expect(page.locator("main h1")).to_have_text("Borrow")
    mark_no_reload(page)
    preview = page.get_by_test_id("borrow-preview")

    # typing the amount fills the schedule and the collateral needed
    page.locator("#id_amount").fill("1")
    total, _, needed = quote("1", "6000")
    expect(preview.get_by_test_id("preview-total")).to_have_text(f"{total} ETH")
    expect(preview.get_by_test_id("preview-needed")).to_have_text(f"{needed} USDT")
    expect(preview.locator("tr.installment")).to_have_count(6)

    # the collateral gives the LTV, against the lines
    page.locator("#id_collateral_amount").fill("6000")
    _, ltv, _ = quote("1", "6000")
    expect(preview.get_by_test_id("ltv-value")).to_have_text(ltv)
    expect(preview.get_by_test_id("ltv-verdict")).to_contain_text("Enough collateral")
    expect(preview.get_by_test_id("ltv-line-liquidation")).to_be_attached()

    # a larger amount: the preview follows
    page.locator("#id_amount").fill("1.2")
    total, ltv, needed = quote("1.2", "6000")
    expect(preview.get_by_test_id("preview-total")).to_have_text(f"{total} ETH")
    expect(preview.get_by_test_id("ltv-value")).to_have_text(ltv)
    expect(preview.get_by_test_id("preview-needed")).to_have_text(f"{needed} USDT")
    no_sideways_scroll(page, f"borrow at {width}px")
    screenshot(page, f"lending-borrow-{width}")

    # too much for the collateral: said so, with what is needed
    page.locator("#id_amount").fill("1.5")
    expect(preview.get_by_test_id("ltv-verdict")).to_contain_text("Too little collateral")
    # a bad amount: the preview names the field
    page.locator("#id_amount").fill("-1")
    expect(preview.get_by_test_id("preview-errors")).to_contain_text(
        "Amount: Must be greater than zero."
    )
    assert_not_reloaded(page)
    no_sideways_scroll(page, f"borrow with an error at {width}px")

    # publishing goes to the request's page, the collateral held
    page.locator("#id_amount").fill("1")
    submit = page.get_by_role("button", name="Publish request")
    expect(submit).to_be_visible()
    submit.click()
    expect(page).to_have_url(re.compile(r"/lending/requests/\d+/$"))
    expect(page.locator("main h1")).to_contain_text("Loan request #")
    expect(page.get_by_test_id("request-state")).to_have_text("Open for funding")
    req = LoanRequest.objects.get()
    assert (req.amount, req.collateral_amount) == (Decimal(1), Decimal(6000))
    assert bal(alice, "USDT") == Decimal(1000)
    no_sideways_scroll(page, f"request detail at {width}px")


@pytest.mark.parametrize("width", WIDTHS)
def test_lend_with_filters_and_funding(open_page, console, width, alice, bob, carol):
    # A refused form comes back with HTTP 400, which Chromium logs as a console error.
    console.allow(r"status of 400 \(Bad Request\)")
    fund(alice, "USDT", "6000")
    fund(carol, "USDT", "9000")
    fund(bob, "ETH", "2")
    cheap = request_example(alice, annual_rate="3")
    dear = request_example(carol, annual_rate="9", term_months=12, collateral_amount="9000")
    page = login(open_page(width=width), "bob")
    page.goto("/lending/")
    expect(page.locator("main h1")).to_have_text("Lend")
    rows = page.locator("tr.request-row")
    expect(rows).to_have_count(2)
    no_sideways_scroll(page, f"lend at {width}px")
    screenshot(page, f"lending-lend-{width}")

    # filters: the least rate, then the longest term
    page.get_by_label("Rate at least (%)").fill("5")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-request", str(dear.pk))
    page.get_by_label("Rate at least (%)").fill("")
    page.get_by_label("Term at most").select_option("6")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-request", str(cheap.pk))

    # fund it: too much first, then a chosen part
    fund_link = rows.first.get_by_role("link", name="Fund")
    expect(fund_link).to_be_visible()
    fund_link.click()
    expect(page.locator("main h1")).to_contain_text(f"Loan request #{cheap.pk}")
    expect(page.get_by_test_id("schedule").locator("tr.installment")).to_have_count(6)
    field = page.locator("#field-amount")
    page.get_by_label("Amount to lend").fill("1.5")
    page.get_by_role("button", name="Fund", exact=True).click()
    expect(field.locator(".field-error")).to_have_text(f"At most {fmt(Decimal(1), 18)}.")
    assert not LoanCommitment.objects.exists()
    page.get_by_label("Amount to lend").fill("0.4")
    page.get_by_role("button", name="Fund", exact=True).click()
    expect(page.locator(".alert-success")).to_contain_text("You committed")
    eth = Asset.objects.get(code="ETH")
    expect(page.get_by_test_id("funded")).to_have_text(amount_shown(Decimal("0.4"), eth))
    expect(page.get_by_test_id("left")).to_have_text(amount_shown(Decimal("0.6"), eth))
    assert LoanCommitment.objects.get().amount == Decimal("0.4")
    assert bal(bob, "ETH") == Decimal("1.6")
    no_sideways_scroll(page, f"request detail at {width}px")
    screenshot(page, f"lending-request-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_my_loans_gauge_and_early_repayment(open_page, width, alice, bob):
    fund(alice, "USDT", "6000")
    fund(bob, "ETH", "1")
    req = request_example(alice)
    services.loan_request_fund(request_id=req.pk, lender=bob, amount="1")
    fund(alice, "ETH", "0.1")  # enough for the interest on top of the principal
    page = login(open_page(width=width), "alice")
    page.goto("/lending/mine/")
    expect(page.locator("main h1")).to_have_text("My loans")
    card = page.get_by_test_id("loan-card")
    expect(card).to_have_count(1)
    expect(card.get_by_test_id("loan-state")).to_have_text("Active")
    first = Loan.objects.get().installments.get(n=1)
    expect(card.get_by_test_id("next-due")).to_contain_text(first.due_at.strftime("%-d %b %Y"))

    # the gauge: the LTV's fill and the two lines where the settings put them
    gauge = card.get_by_test_id("ltv-gauge")
    expect(gauge).to_be_visible()
    track = gauge.locator(".ltv-track").bounding_box()
    assert track is not None
    for kind, line in (
        ("margin", settings.LENDING_MARGIN_CALL_LTV),
        ("liquidation", settings.LENDING_LIQUIDATION_LTV),
    ):
        box = gauge.get_by_test_id(f"ltv-line-{kind}").bounding_box()
        assert box is not None
        at = (box["x"] + box["width"] / 2 - track["x"]) / track["width"]
        assert abs(Decimal(str(at)) - line) < Decimal("0.02"), (kind, at)
    ltv = Loan.objects.get()
    from lending import selectors

    value = selectors.loan_ltv(ltv)
    assert value is not None
    expect(gauge.get_by_test_id("ltv-value")).to_have_text(f"{value * 100:.2f}%")
    fill = gauge.locator(".ltv-fill").bounding_box()
    assert fill is not None
    assert abs(Decimal(str(fill["width"] / track["width"])) - value) < Decimal("0.03")
    no_sideways_scroll(page, f"my loans at {width}px")
    screenshot(page, f"lending-my-loans-{width}")

    # early repayment: the quote first, then the payment
    repay = card.locator("summary", has_text="Repay early")
    expect(repay).to_be_visible()
    expect(card.locator("summary", has_text="Add collateral")).to_be_visible()
    repay.click()
    payoff = services.loan_payoff_quote(Loan.objects.get())
    shown = amount_shown(payoff.total, Asset.objects.get(code="ETH"))
    expect(card.get_by_test_id("payoff-total")).to_have_text(f"{shown} ETH")
    no_sideways_scroll(page, f"my loans with the quote open at {width}px")
    confirm = card.get_by_role("button", name=re.compile(r"^Repay "))
    expect(confirm).to_be_visible()
    confirm.click()
    expect(page).to_have_url(re.compile(rf"/lending/loans/{req.pk}/$"))
    expect(page.get_by_test_id("loan-state")).to_have_text("Repaid")
    expect(page.get_by_test_id("events")).to_contain_text("repaid early")
    assert Loan.objects.get().state == Loan.State.REPAID
    assert bal(alice, "USDT") == Decimal(6000)
    assert bal(bob, "ETH") == payoff.total
    no_sideways_scroll(page, f"loan detail at {width}px")
    screenshot(page, f"lending-loan-{width}")
