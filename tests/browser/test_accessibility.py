"""Accessibility (issue 20, point 7). axe-core, vendored from npm (package.json pins it;
scripts/with-services.sh runs `npm ci` where it is missing), checks the main pages against
WCAG 2.1 A and AA in the real browser, at 1280 and 390 px, in English and in Arabic
(right-to-left): 0 violations of impact serious or critical. The pages are checked as they load,
with every collapsed panel opened (the confirmation dialogs' fields) and with form errors shown.

And the trade room works by keyboard alone: the buyer marks the trade paid and the seller
releases it with Tab, Shift+Tab, Enter, Space and Escape, the mouse never touched; every stop on
the way shows where the focus is, and the confirmation panels hold the focus until closed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Locator, Page, expect

from escrow import services as escrow
from escrow.models import Trade
from marketplace.tests.factories import fund, make_offer, make_trade
from tests.browser.helpers import PASSWORD, ROOT, SCREENSHOTS, login, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}
# Every check's full list (minor and moderate too) lands here as JSON, for whoever fixes them.
REPORTS = SCREENSHOTS.parent / "axe"

# axe.run in the page; only what the report needs comes back (the full result is megabytes).
RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {
    runOnly: {type: "tag", values: tags},
    resultTypes: ["violations"],
  });
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.length,
    targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
    summary: v.nodes.length ? v.nodes[0].failureSummary : "",
  }));
}"""


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Every WCAG 2.1 A/AA violation axe-core finds on the page as it is now.

    The script goes in through the DevTools protocol (page.evaluate), not a <script> tag: the
    pages' Content-Security-Policy (script-src 'self') refuses inline scripts, and the check must
    not loosen it."""
    assert AXE_JS.is_file(), f"{AXE_JS} is missing: run `npm ci` (scripts/with-services.sh does)"
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    return page.evaluate(RUN_AXE, WCAG_TAGS)


def blocking(page: Page, name: str) -> list[str]:
    """The serious and critical violations of the page, one readable line each; the whole list
    (every impact) goes to test-artifacts/axe/<name>-<width>.json."""
    violations = axe_violations(page)
    width = page.viewport_size["width"] if page.viewport_size else 0
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{name}-{width}.json").write_text(json.dumps(violations, indent=1))
    return [
        f"{name} at {width}px ({page.url}): {v['id']} [{v['impact']}] {v['help']}: "
        f"{v['nodes']} node(s), e.g. {'; '.join(v['targets'])}\n    {v['summary']}"
        for v in violations
        if v["impact"] in BLOCKING
    ]


def check_page(page: Page, name: str, path: str) -> list[str]:
    """Load a page and check it; then, if it has collapsed panels (<details>: confirmations,
    filters, menus), check it again with all of them open."""
    response = page.goto(path)
    assert response is not None
    assert response.status == 200, f"{name}: HTTP {response.status}"
    page.evaluate("document.fonts.ready.then(() => true)")
    problems = blocking(page, name)
    opened = page.evaluate(
        """() => {
          const closed = [...document.querySelectorAll("details:not([open])")];
          closed.forEach((d) => { d.open = true; });
          return closed.length;
        }"""
    )
    if opened:
        problems += blocking(page, f"{name}-opened")
    return problems


def _market(alice: Any, bob: Any) -> tuple[Any, Trade]:
    """An order book with offers, a funded trade bob buys in, balances in his wallet."""
    fund(alice, "BTC", "2")
    offer = make_offer(alice, terms="SEPA instant only.")
    make_offer(alice, price="81000", payment_methods=["sepa", "revolut", "wise"])
    trade = make_trade(alice, bob, amount="0.01")
    fund(bob, "ETH", "2.5")
    make_offer(bob, side="buy", asset="ETH", price="2900", amount="1", max_fiat="2900")
    return offer, trade


@pytest.mark.parametrize("width", [1280, 390])
def test_main_pages_have_no_serious_accessibility_violations(open_page, console, width, alice, bob):
    # A refused form comes back with HTTP 400, which Chromium logs as a console error.
    console.allow(r"status of 400 \(Bad Request\)")
    offer, trade = _market(alice, bob)

    # the pages a visitor sees, and their forms refused
    visitor = open_page(width=width)
    problems = check_page(visitor, "login", "/accounts/login/")
    problems += check_page(visitor, "password-reset", "/accounts/password/reset/")
    problems += check_page(visitor, "signup", "/accounts/signup/")
    visitor.get_by_role("button", name="Create account").click()
    expect(visitor.locator(".field-error").first).to_be_visible()
    problems += blocking(visitor, "signup-errors")
    visitor.goto("/accounts/login/")
    visitor.get_by_label("Username").fill("bob")
    visitor.get_by_label("Password").fill("not-his-password")
    visitor.get_by_role("button", name="Log in").click()
    expect(visitor.locator(".alert-error, .form-errors, [role=alert]").first).to_be_visible()
    problems += blocking(visitor, "login-errors")

    # the pages a trader sees
    buyer = login(open_page(width=width), "bob")
    for name, path in [
        ("order-book", "/?side=buy&asset=BTC&fiat=EUR"),
        ("offer-detail", f"/offers/{offer.pk}/"),
        ("trade-room", f"/trades/{trade.pk}/"),
        ("wallet", "/wallet/"),
        ("offer-form", "/offers/new/"),
        ("settings", "/settings/"),
        ("my-trades", "/trades/"),
        ("my-offers", "/offers/mine/"),
        ("profile", "/u/alice/"),
        ("notifications", "/notifications/"),
        ("payment-account-form", "/settings/payment-accounts/new/"),
        ("password-change", "/accounts/password/change/"),
        ("lend", "/lending/"),
        ("borrow", "/lending/borrow/"),
        ("my-loans", "/lending/mine/"),
        ("reserves", "/reserves/"),
    ]:
        problems += check_page(buyer, name, path)
    # the offer form sent empty: every field with its error
    buyer.goto("/offers/new/")
    buyer.get_by_role("button", name="Publish offer").click()
    expect(buyer.locator(".field-error").first).to_be_visible()
    problems += blocking(buyer, "offer-form-errors")

    assert not problems, f"{len(problems)} serious or critical violations:\n" + "\n".join(problems)


def test_arabic_pages_have_no_serious_accessibility_violations(open_page, alice, bob):
    # given: bob reads the site in Arabic (the language selector's cookie; his profile names none)
    offer, trade = _market(alice, bob)
    buyer = login(open_page(width=390), "bob")
    buyer.context.add_cookies(
        [{"name": settings.LANGUAGE_COOKIE_NAME, "value": "ar", "url": buyer.url}]
    )

    # when
    problems = check_page(buyer, "order-book-ar", "/?side=buy&asset=BTC&fiat=EUR")
    expect(buyer.locator("html")).to_have_attribute("dir", "rtl")
    expect(buyer.locator("html")).to_have_attribute("lang", "ar")
    problems += check_page(buyer, "offer-detail-ar", f"/offers/{offer.pk}/")
    problems += check_page(buyer, "trade-room-ar", f"/trades/{trade.pk}/")
    problems += check_page(buyer, "offer-form-ar", "/offers/new/")

    # then
    assert not problems, f"{len(problems)} serious or critical violations:\n" + "\n".join(problems)


# --- the keyboard ---------------------------------------------------------------------------

# What has the focus, and whether a sighted person can see where it is: an outline of 2px or
# more, or a ring drawn with box-shadow, and not hidden under the sticky header.
FOCUS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
  const ring = style.boxShadow && style.boxShadow !== "none";
  const label = (el.getAttribute("aria-label") || el.textContent || el.name || "").trim();
  // WCAG 2.4.11: the sticky header must not hide what has the focus.
  const header = document.querySelector(".site-header");
  const box = el.getBoundingClientRect();
  const seen = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  const under = !!header && !!seen && header.contains(seen) && !header.contains(el);
  return {
    what: `${el.tagName.toLowerCase()} ${label.slice(0, 40)}`,
    visible: (outline || !!ring) && !under,
  };
}"""


def tab_to(page: Page, target: Locator, *, key: str = "Tab", limit: int = 200) -> list[str]:
    """Press Tab (or Shift+Tab) until `target` has the focus, as a keyboard user gets there.
    Returns the stops on the way whose focus could not be seen."""
    unseen = []
    for _ in range(limit):
        page.keyboard.press(key)
        focus = page.evaluate(FOCUS)
        if focus and not focus["visible"]:
            unseen.append(focus["what"])
        if target.evaluate("(el) => el === document.activeElement"):
            return unseen
    raise AssertionError(f"{limit} presses of {key} never reached {target}")


def _state(trade: Trade) -> str:
    return Trade.objects.values_list("state", flat=True).get(pk=trade.pk)


@pytest.mark.parametrize("width", [1280, 390])
def test_the_trade_room_works_by_keyboard_alone(open_page, width, alice, bob):
    trade = make_trade(alice, bob, amount="0.01")

    # the buyer tabs from the top of the page to "I have paid"; every stop shows its focus
    buyer = login(open_page(width=width), "bob")
    buyer.goto(f"/trades/{trade.pk}/")
    panel = buyer.locator("details.action-mark-paid")
    summary = panel.locator("summary")
    unseen = tab_to(buyer, summary)
    assert not unseen, f"focus not visible on: {unseen}"

    # Enter opens the confirmation and takes the focus to its button
    buyer.keyboard.press("Enter")
    expect(panel).to_have_attribute("open", "")
    confirm = panel.get_by_role("button", name="Yes, I have paid")
    expect(confirm).to_be_focused()
    # the focus stays inside: Tab from the last stop wraps to the summary, Shift+Tab comes back
    buyer.keyboard.press("Tab")
    expect(summary).to_be_focused()
    buyer.keyboard.press("Shift+Tab")
    expect(confirm).to_be_focused()
    # Escape closes it and gives the focus back to the summary; nothing was sent
    buyer.keyboard.press("Escape")
    expect(panel).not_to_have_attribute("open", "")
    expect(summary).to_be_focused()
    assert _state(trade) == Trade.State.FUNDED

    # Space opens it again; Enter on the button marks the trade paid
    buyer.keyboard.press("Space")
    expect(confirm).to_be_focused()
    buyer.keyboard.press("Enter")
    expect(buyer.locator(".messages")).to_contain_text("Marked as paid")
    assert _state(trade) == Trade.State.PAID

    # the seller tabs backwards from the end of the page to "Release BTC"
    seller = login(open_page(width=width), "alice")
    seller.goto(f"/trades/{trade.pk}/")
    panel = seller.locator("details.action-release")
    summary = panel.locator("summary")
    unseen = tab_to(seller, summary, key="Shift+Tab")
    assert not unseen, f"focus not visible on: {unseen}"

    # Space opens the release; the focus lands in the password field, typed by keyboard
    seller.keyboard.press("Space")
    password = panel.get_by_label("Your password")
    expect(password).to_be_focused()
    problems = blocking(seller, "trade-room-release-dialog")
    assert not problems, "\n".join(problems)
    seller.keyboard.type(PASSWORD)
    seller.keyboard.press("Tab")
    confirm = panel.get_by_role("button", name="Yes, release 0.01000000 BTC")
    expect(confirm).to_be_focused()
    screenshot(seller, f"a11y-keyboard-release-focus-{width}")
    # round the panel: to the summary, then backwards to the password and forwards again
    seller.keyboard.press("Tab")
    expect(summary).to_be_focused()
    seller.keyboard.press("Shift+Tab")
    expect(confirm).to_be_focused()
    seller.keyboard.press("Shift+Tab")
    expect(password).to_be_focused()
    seller.keyboard.press("Tab")
    expect(confirm).to_be_focused()
    seller.keyboard.press("Enter")

    expect(seller.locator(".messages")).to_contain_text("Released")
    assert _state(trade) in {Trade.State.RELEASING, Trade.State.COMPLETED}


def test_a_confirmation_sent_back_open_leaves_the_focus_alone(open_page, alice, bob):
    """A panel that is open when the page loads (the server sent it back with an error) takes
    no focus: only a person opening it moves the focus."""
    trade = make_trade(alice, bob, amount="0.01")
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    seller = login(open_page(), "alice")
    seller.goto(f"/trades/{trade.pk}/")
    seller.evaluate("document.querySelector('details.action-release').open = true")
    expect(seller.locator("details.action-release")).to_have_attribute("open", "")
    expect(
        seller.locator("details.action-release").get_by_label("Your password")
    ).not_to_be_focused()
