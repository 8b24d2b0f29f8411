"""Amounts a trader can read, and commit to knowingly, in the browser: the fee breakdown before
taking (computed by the server as the amount changes), a trade bought for an odd fiat amount
shown at the asset's display precision with the exact amount on hover and in the API, and an
offer that can't be taken any more closing itself, its maker told. At 390 and 1280 px, none of
these pages scrolls sideways."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from common.templatetags.money import amount, amount_shown
from escrow import services as escrow
from escrow.models import Trade
from ledger.models import Asset
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer
from notifications.models import Notification
from tests.browser.helpers import login, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = [390, 1280]

STICKING_OUT = """() => Array.from(document.querySelectorAll("main *"))
  .filter((el) => el.getBoundingClientRect().right > window.innerWidth)
  .slice(-5)
  .map((el) => el.tagName.toLowerCase() + "." + el.className + " " + el.getBoundingClientRect().right)"""


# Select an element's text and copy it as the browser would; what lands on the clipboard.
COPY = """(el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  const data = new DataTransfer();
  el.dispatchEvent(new ClipboardEvent("copy", {clipboardData: data, bubbles: true, cancelable: true}));
  return data.getData("text/plain");
}"""


def no_sideways_scroll(page: Page, name: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} scrolls sideways by {overflow}px: {page.evaluate(STICKING_OUT)}"


def _eth_offer(maker, **overrides) -> Offer:
    fund(maker, "ETH", "2")
    values = {"asset": "ETH", "price": "2600", "amount": "1", "min_fiat": "10", "max_fiat": "2000"}
    values.update(overrides)
    return make_offer(maker, **values)


def _shown(value: Decimal) -> str:
    return amount_shown(value, Asset.objects.get(code="ETH"))


@pytest.mark.parametrize("width", WIDTHS)
def test_the_fee_breakdown_appears_before_taking_and_follows_the_amount(
    open_page, width, alice, bob
):
    offer = _eth_offer(alice)
    page = login(open_page(width=width), "bob")
    page.goto(f"/offers/{offer.pk}/")
    breakdown = page.get_by_test_id("fee-breakdown")
    expect(breakdown).to_have_count(0)  # nothing typed, nothing shown

    # when bob types 100 EUR: every figure is the service's
    page.get_by_label("I want to pay").fill("100")
    first = escrow.trade_quote(offer=offer, fiat_amount="100")
    expect(page.get_by_test_id("preview-amount")).to_have_text(f"{_shown(first.amount)} ETH")
    expect(page.get_by_test_id("preview-fee")).to_have_text(f"{_shown(first.buyer_fee)} ETH")
    expect(page.get_by_test_id("preview-receives")).to_have_text(
        f"{_shown(first.buyer_receives)} ETH"
    )
    expect(page.get_by_test_id("preview-hold")).to_contain_text(_shown(first.hold_amount))
    expect(page.get_by_test_id("preview-price")).to_have_text("2,600.00 EUR / ETH")
    expect(page.get_by_test_id("preview-fiat")).to_have_text("100.00 EUR")

    # and it follows the amount
    page.get_by_label("I want to pay").fill("260")
    second = escrow.trade_quote(offer=offer, fiat_amount="260")
    expect(page.get_by_test_id("preview-amount")).to_have_text(f"{_shown(second.amount)} ETH")
    expect(page.get_by_test_id("preview-fee")).to_have_text(f"{_shown(second.buyer_fee)} ETH")
    # a refusal is part of the breakdown, naming the limit
    page.get_by_label("I want to pay").fill("5000")
    expect(page.get_by_test_id("preview-error")).to_contain_text("10.00 – 2,000.00 EUR")
    page.get_by_label("I want to pay").fill("260")
    expect(page.get_by_test_id("preview-amount")).to_have_text(f"{_shown(second.amount)} ETH")
    no_sideways_scroll(page, f"the take form at {width}px")
    screenshot(page, f"amounts-take-breakdown-{width}")

    # quick buy shows the same breakdown for the best offer
    page.goto("/?side=buy&asset=ETH&fiat=EUR")
    page.locator("details.quick > summary").click()
    quick = page.locator("#quick-form")
    quick.locator("[name=asset]").select_option("ETH")
    quick.locator("[name=fiat]").select_option("EUR")
    quick.locator("[name=fiat_amount]").fill("100")
    expect(page.get_by_test_id("preview-offer")).to_contain_text(f"#{offer.pk}")
    expect(page.locator("#quick-preview").get_by_test_id("preview-amount")).to_have_text(
        f"{_shown(first.amount)} ETH"
    )
    no_sideways_scroll(page, f"quick buy at {width}px")
    screenshot(page, f"amounts-quick-breakdown-{width}")
    assert not Trade.objects.exists()  # nothing was committed to


@pytest.mark.parametrize("width", WIDTHS)
def test_an_odd_fiat_amount_trades_at_the_display_precision_exact_on_hover_and_in_the_api(
    open_page, width, alice, bob
):
    offer = _eth_offer(alice)
    page = login(open_page(width=width), "bob")
    page.goto(f"/offers/{offer.pk}/")
    page.get_by_label("I want to pay").fill("100")
    expect(page.get_by_test_id("preview-amount")).to_be_visible()
    page.locator("#take-form").get_by_role("button", name="Buy ETH").click()
    expect(page).to_have_url(re.compile(r"/trades/\d+/$"))
    trade = Trade.objects.get(offer=offer)
    # 100 / 2600 = 0.0384615384...: quantized at opening to ETH's 6 places
    assert trade.amount == Decimal("0.038461")
    assert trade.fiat_amount == Decimal("100.00")

    # every amount in the room has at most 6 places, its exact amount in its title
    amounts = page.locator("main .amount")
    expect(amounts.first).to_be_visible()
    for text, title in zip(
        amounts.all_text_contents(),
        [a.get_attribute("title") for a in amounts.all()],
        strict=True,
    ):
        assert re.fullmatch(r"\d+\.\d{6}", text), text
        assert title
        assert Decimal(title) >= Decimal(text)
    fee = page.locator(f'main .amount[title="{amount(trade.buyer_fee, 18)}"]').first
    expect(fee).to_have_text(_shown(trade.buyer_fee))  # 0.000076922 -> 0.000076
    assert trade.buyer_fee != Decimal(_shown(trade.buyer_fee))  # rounded for display only
    fee.hover()
    assert fee.get_attribute("data-exact") == amount(trade.buyer_fee, 18)
    # copying the shown amount copies the exact one
    copied = fee.evaluate(COPY)
    assert copied == amount(trade.buyer_fee, 18)

    # the API keeps the exact amounts
    api = page.request.get(f"/api/v1/trades/{trade.pk}/").json()
    assert Decimal(api["amount"]) == trade.amount
    assert Decimal(api["fee"]) == trade.buyer_fee + trade.seller_fee
    assert api["fiat_amount"] == "100.00"
    no_sideways_scroll(page, f"the trade room at {width}px")
    screenshot(page, f"amounts-trade-room-{width}")

    # the wallet shows what balances are worth
    seller = login(open_page(width=width), "alice")
    seller.goto("/wallet/")
    expect(seller.get_by_test_id("fiat-value-ETH")).to_contain_text("EUR")
    no_sideways_scroll(seller, f"the wallet at {width}px")
    screenshot(seller, f"amounts-wallet-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_dust_offer_closes_itself_and_the_maker_is_told(open_page, width, alice, bob):
    # given 0.1 ETH at 2600 (260 EUR), 50 EUR minimum per trade
    offer = _eth_offer(alice, amount="0.1", min_fiat="50", max_fiat="1000")
    buyer = login(open_page(width=width), "bob")
    buyer.goto(f"/offers/{offer.pk}/")
    # when bob buys for 250 EUR, leaving about 10 EUR of ETH
    buyer.get_by_label("I want to pay").fill("250")
    expect(buyer.get_by_test_id("preview-amount")).to_be_visible()
    buyer.locator("#take-form").get_by_role("button", name="Buy ETH").click()
    expect(buyer).to_have_url(re.compile(r"/trades/\d+/$"))

    # then the offer is gone from the book and quick buy
    offer.refresh_from_db()
    assert not offer.is_active
    assert offer.closed_at is not None
    buyer.goto("/?side=buy&asset=ETH&fiat=EUR")
    expect(buyer.locator("article.offer-row", has_text="alice")).to_have_count(0)
    buyer.goto(f"/offers/{offer.pk}/")
    expect(buyer.get_by_test_id("offer-closed")).to_be_visible()
    expect(buyer.locator("#take-form")).to_have_count(0)

    # and alice is told, and led to top it up
    maker = login(open_page(width=width), "alice")
    maker.goto("/notifications/")
    note = maker.get_by_role("button", name=re.compile(rf"Your offer #{offer.pk} was closed"))
    expect(note).to_contain_text(f"{_shown(offer.available)} ETH is left")
    no_sideways_scroll(maker, f"notifications at {width}px")
    note.click()
    expect(maker).to_have_url(re.compile(rf"/offers/{offer.pk}/edit/$"))
    expect(maker.get_by_test_id("offer-closed-note")).to_be_visible()
    no_sideways_scroll(maker, f"the offer form of a closed offer at {width}px")
    screenshot(maker, f"amounts-closed-offer-{width}")
    maker.goto("/offers/mine/")
    expect(maker.get_by_test_id(f"offer-closed-{offer.pk}")).to_have_text("Closed")
    no_sideways_scroll(maker, f"my offers at {width}px")

    # topping it up reopens it
    maker.goto(f"/offers/{offer.pk}/edit/")
    maker.get_by_label("Total amount of crypto").fill("0.5")
    maker.get_by_role("button", name="Save changes").click()
    expect(maker.locator(".messages")).to_contain_text("reopened")
    offer.refresh_from_db()
    assert offer.is_active
    assert offer.closed_at is None
    assert Notification.objects.filter(user=alice, offer=offer).count() == 1
