"""Arabic mirrors the layout: at 1280 and 390 px the order book and the trade room are drawn
right to left (the logo at the right edge, the navigation and the text starting from the
right), with no layout problems, and screenshotted into
test-artifacts/screenshots/rtl-<page>-<width>.png; the same pages in English start from the
left. The language is chosen as a visitor does, with the header's selector."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from marketplace.tests.factories import fund, make_offer, make_trade
from tests.browser.helpers import login, screenshot
from tests.browser.layout import layout_problems

pytestmark = pytest.mark.django_db(transaction=True)


def _box(page: Page, selector: str) -> dict[str, float]:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, selector
    return box


def _pick_language(page: Page, code: str) -> None:
    page.locator(".lang-switch select").select_option(code)
    # the selector submits itself (static/js/language.js); without script its button does
    expect(page.locator("html")).to_have_attribute("lang", code)


@pytest.mark.parametrize("width", [1280, 390])
def test_arabic_pages_are_mirrored(open_page, alice, bob, width):
    fund(alice, "BTC", "1")
    make_offer(alice, amount="0.5")
    trade = make_trade(alice, bob, amount="0.01", fund_seller=False)
    page = login(open_page(width=width), "bob")
    pages = {"order-book": "/?side=buy&asset=BTC&fiat=EUR", "trade-room": f"/trades/{trade.pk}/"}

    # in English the logo sits at the left edge
    page.goto(pages["order-book"])
    assert _box(page, ".site-header .logo")["x"] < width / 2

    # when bob picks Arabic
    _pick_language(page, "ar")
    # then every page is right to left and mirrored, without layout problems
    for name, path in pages.items():
        page.goto(path)
        expect(page.locator("html")).to_have_attribute("dir", "rtl")
        expect(page.locator("html")).to_have_attribute("lang", "ar")
        logo = _box(page, ".site-header .logo")
        assert logo["x"] + logo["width"] > width / 2, f"{name}: the logo is not on the right"
        heading = _box(page, "main h1")
        main = _box(page, "main")
        # the heading's text starts from the right: its box ends at the content's right edge
        assert heading["x"] + heading["width"] >= main["x"] + main["width"] - 40, name
        assert page.locator("main h1").evaluate("e => getComputedStyle(e).direction") == "rtl"
        problems = layout_problems(page, f"rtl-{name}-{width}")
        assert not problems, "\n".join(problems)
        screenshot(page, f"rtl-{name}-{width}")

    # and back to English: left to right again
    _pick_language(page, "en")
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
    assert _box(page, ".site-header .logo")["x"] < width / 2
