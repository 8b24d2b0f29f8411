"""Bad input and impatient hands: an over-precise amount is refused next to its field and kept
as typed; a double click on "Buy" or "Release" does one thing."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Request, expect

from conftest import wait_for
from escrow import services as escrow
from escrow.models import Settlement, Trade
from ledger.models import Transfer
from marketplace.tests.factories import fund, make_offer, make_trade
from tests.browser.helpers import PASSWORD, login

pytestmark = pytest.mark.django_db(transaction=True)


def _count_posts(page: Page, path: str) -> list[Request]:
    """The POST requests the page sends to `path`, as they happen."""
    posts: list[Request] = []
    page.on(
        "request",
        lambda r: posts.append(r) if r.method == "POST" and r.url.endswith(path) else None,
    )
    return posts


def test_an_over_precise_amount_shows_the_field_error_and_keeps_the_value(
    open_page, console, alice, bob
):
    # A refused form comes back with HTTP 400, which Chromium logs as a console error.
    console.allow(r"status of 400 \(Bad Request\)")
    fund(alice, "BTC", "1")
    offer = make_offer(alice)
    buyer = login(open_page(), "bob")
    buyer.goto(f"/offers/{offer.pk}/")
    take = buyer.locator("#take-form")

    # nine decimals of BTC (it has eight)
    take.get_by_label("Or: I want to receive").fill("0.123456789")
    take.get_by_role("button", name="Buy BTC").click()
    field = buyer.locator("#field-amount")
    expect(field.locator(".field-error")).to_have_text("At most 8 decimal places.")
    expect(field).to_have_class(re.compile(r"\bhas-error\b"))
    expect(take.get_by_label("Or: I want to receive")).to_have_value("0.123456789")

    # three decimals of EUR (it has two)
    take.get_by_label("I want to pay").fill("800.125")
    take.get_by_role("button", name="Buy BTC").click()
    field = buyer.locator("#field-fiat_amount")
    expect(field.locator(".field-error")).to_have_text(
        "EUR has 2 decimal places: at most 2, e.g. 123.45."
    )
    expect(take.get_by_label("I want to pay")).to_have_value("800.125")

    assert not Trade.objects.exists()


def test_a_double_click_on_buy_opens_one_trade(open_page, alice, bob):
    fund(alice, "BTC", "1")
    offer = make_offer(alice)
    buyer = login(open_page(), "bob")
    buyer.goto(f"/offers/{offer.pk}/")
    posts = _count_posts(buyer, f"/offers/{offer.pk}/")

    buyer.get_by_label("I want to pay").fill("800")
    buyer.locator("#take-form").get_by_role("button", name="Buy BTC").dblclick()

    expect(buyer).to_have_url(re.compile(r"/trades/\d+/$"))
    expect(buyer.locator("#trade-live .state-badge")).to_have_text("Awaiting payment")
    assert len(posts) == 1
    assert Trade.objects.filter(offer=offer).count() == 1


@pytest.mark.celery_worker
def test_a_double_click_on_release_settles_once(celery_worker_process, open_page, alice, bob):
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    seller = login(open_page(), "alice")
    seller.goto(f"/trades/{trade.pk}/")
    posts = _count_posts(seller, f"/trades/{trade.pk}/release/")

    seller.locator("details.action-release > summary").click()
    seller.locator("details.action-release").get_by_label("Your password").fill(PASSWORD)
    confirm = seller.locator("details.action-release").get_by_role(
        "button", name=re.compile(r"^Yes, release")
    )
    confirm.dblclick()

    expect(seller.locator(".messages")).to_contain_text("Released")
    expect(seller.locator("#trade-live .state-badge")).to_have_text("Completed")
    expect(seller.get_by_text("This trade changed")).to_have_count(0)
    assert len(posts) == 1
    wait_for(lambda: Settlement.objects.filter(trade=trade, status="done").exists())
    assert Settlement.objects.filter(trade=trade).count() == 1
    assert Transfer.objects.filter(reference=trade.pk, kind="trade_payout").count() == 1
