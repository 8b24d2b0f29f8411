"""Every main page loads without console errors or uncaught exceptions, on a phone (390 px)
and on a desktop (1280 px), and leaves a full-page screenshot in test-artifacts/screenshots/."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from marketplace.tests.factories import fund, make_offer, make_trade
from tests.browser.helpers import login, screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def _visit(page: Page, console, name: str, path: str, width: int, heading: str) -> list[str]:
    """Open a page, check it rendered, screenshot it; the problems it had."""
    seen = len(console.errors)
    response = page.goto(path)
    problems = []
    if response is None or response.status != 200:
        problems.append(f"{name}: HTTP {response and response.status}")
    expect(page.locator("main h1")).to_contain_text(heading)
    page.evaluate("document.fonts.ready.then(() => true)")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        problems.append(f"{name}: scrolls sideways by {overflow}px at {width}px")
    screenshot(page, f"{name}-{width}")
    problems += [f"{name}: {e}" for e in console.errors[seen:]]
    return problems


@pytest.mark.parametrize("width", [390, 1280])
def test_main_pages_load_cleanly(open_page, console, width, alice, bob):
    fund(alice, "BTC", "2")
    offer = make_offer(alice, terms="SEPA instant only.\nNo third-party payments.")
    make_offer(alice, price="81000", payment_methods=["sepa", "revolut", "wise"])
    trade = make_trade(alice, bob, amount="0.01")
    fund(bob, "ETH", "2.5")
    make_offer(bob, side="buy", asset="ETH", price="2900", amount="1", max_fiat="2900")

    trader = login(open_page(width=width), "bob")
    pages = [
        ("order-book", "/?side=buy&asset=BTC&fiat=EUR", "Buy BTC"),
        ("offer-detail", f"/offers/{offer.pk}/", "Buy BTC from alice"),
        ("offer-new", "/offers/new/", "Post an offer"),
        ("my-offers", "/offers/mine/", "My offers"),
        ("my-trades", "/trades/", "My trades"),
        ("trade-room", f"/trades/{trade.pk}/", "Buying"),
        ("wallet", "/wallet/", ""),
        ("profile", "/u/alice/", "alice"),
    ]
    problems = []
    for name, path, heading in pages:
        problems += _visit(trader, console, name, path, width, heading)

    visitor = open_page(width=width)
    problems += _visit(visitor, console, "login", "/accounts/login/", width, "Log in")
    problems += _visit(visitor, console, "signup", "/accounts/signup/", width, "Create")

    console.errors.clear()  # reported above, page by page
    assert not problems, "\n".join(problems)
