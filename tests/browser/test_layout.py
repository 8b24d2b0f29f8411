"""The phone layout: every main page at 360, 390 and 768 px, screenshotted into
test-artifacts/screenshots/layout-<page>-<width>.png, fails when an element sticks out of its
container sideways, when text overlaps other text, or when a word is broken across lines (see
tests/browser/layout.py). One browser context: each page is loaded once and measured at the
three widths by resizing the viewport. Also: the menu button on a phone, by mouse and keyboard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.tests.factories import UserFactory
from disputes import services as disputes
from disputes.apps import ensure_moderators_group
from escrow import services as escrow
from escrow.models import Settlement, Trade
from lending import services as lending
from lending.tests.helpers import request_example
from marketplace.tests.factories import fund, make_offer, make_trade
from tests.browser.helpers import login, screenshot
from tests.browser.layout import layout_problems

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = [360, 390, 768]


def moderator():
    ensure_moderators_group()
    user = UserFactory(username="mod", is_staff=True)
    user.groups.add(Group.objects.get(name="Moderators"))
    return type(user).objects.get(pk=user.pk)


def settle(trade: Trade) -> None:
    """Post the trade's queued settlement here (no worker needed for a layout)."""
    escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)


def paid(seller, buyer, *, ago_minutes: int = 0) -> Trade:
    trade = make_trade(seller, buyer, amount="0.01", payment_methods=["sepa", "revolut", "wise"])
    escrow.trade_mark_paid(trade_id=trade.pk, actor=buyer)
    if ago_minutes:
        Trade.objects.filter(pk=trade.pk).update(
            paid_at=timezone.now() - timedelta(minutes=ago_minutes)
        )
    return trade


def room_states(alice, bob, mod) -> dict[str, Trade]:
    """Trades of bob buying from alice, one per state the room shows differently."""
    rooms = {"funded": make_trade(alice, bob, amount="0.01")}
    rooms["paid"] = paid(alice, bob)
    completed = paid(alice, bob)
    escrow.escrow_release(trade_id=completed.pk, actor=alice)
    settle(completed)
    rooms["completed"] = completed
    cancelled = make_trade(alice, bob, amount="0.01")
    escrow.trade_cancel(trade_id=cancelled.pk, actor=bob)
    rooms["cancelled"] = cancelled
    disputed = paid(alice, bob, ago_minutes=11)
    disputes.dispute_open(
        trade_id=disputed.pk,
        actor=bob,
        category="paid_not_released",
        text="I paid at 14:05 by SEPA, reference 1234; nothing was released since.",
    )
    rooms["disputed"] = disputed
    decided = paid(alice, bob, ago_minutes=11)
    dispute = disputes.dispute_open(
        trade_id=decided.pk, actor=alice, category="not_received", text="Nothing arrived at all."
    )
    disputes.dispute_assign(dispute_id=dispute.pk, actor=mod)
    disputes.dispute_decide(
        dispute_id=dispute.pk, actor=mod, outcome="refund", reason="No payment was shown."
    )
    settle(decided)
    rooms["decided"] = decided
    return rooms


def test_every_main_page_at_phone_and_tablet_widths(open_page, alice, bob, carol):
    # given a market with long method lists, offers bob may not take, trades in every state,
    # a loan, feedback and notifications
    fund(alice, "BTC", "3")
    offer = make_offer(
        alice,
        price="81000",
        payment_methods=["sepa", "revolut", "wise"],
        terms="SEPA instant only.\nNo third-party payments.",
    )
    make_offer(
        alice, price="81500", payment_methods=["sepa", "revolut", "wise"], min_taker_trades=5
    )
    make_offer(alice, price="82000", min_taker_tier=2, min_account_age_days=30)
    fund(bob, "ETH", "2.5")
    make_offer(bob, side="buy", asset="ETH", price="2900", amount="1", max_fiat="2900")
    rooms = room_states(alice, bob, moderator())
    escrow.feedback_leave(
        trade_id=rooms["completed"].pk, actor=alice, rating="positive", comment="Fast payer."
    )
    fund(alice, "USDT", "6000")
    fund(carol, "ETH", "1")
    loan = request_example(alice)
    lending.loan_request_fund(request_id=loan.pk, lender=carol, amount="1")

    pages = [
        ("order-book", "/?side=buy&asset=BTC&fiat=EUR"),
        ("offer-detail", f"/offers/{offer.pk}/"),
        ("offer-new", "/offers/new/"),
        ("my-offers", "/offers/mine/"),
        ("my-trades", "/trades/"),
        *[(f"trade-room-{state}", f"/trades/{t.pk}/") for state, t in rooms.items()],
        ("wallet", "/wallet/"),
        ("settings", "/settings/"),
        ("notifications", "/notifications/"),
        ("profile-alice", "/u/alice/"),
        ("profile-bob", "/u/bob/"),
        ("borrow", "/lending/borrow/"),
        ("lend", "/lending/"),
        ("my-loans", "/lending/mine/"),
    ]
    page = login(open_page(width=WIDTHS[0]), "bob")
    problems: list[str] = []
    for name, path in pages:
        response = page.goto(path)
        assert response is not None, name
        assert response.ok, f"{name}: HTTP {response.status}"
        page.evaluate("document.fonts.ready.then(() => true)")
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            problems += layout_problems(page, f"{name} at {width}px")
            screenshot(page, f"layout-{name}-{width}")
    assert not problems, "\n".join(problems)


def _menu_links(page: Page):
    return page.locator("#main-nav a")


@pytest.mark.parametrize("width", [360, 390])
def test_the_phone_menu_opens_and_closes_by_mouse_and_keyboard(open_page, width, alice):
    page = login(open_page(width=width), "alice")
    page.goto("/trades/")
    button = page.get_by_role("button", name="Menu")
    nav = page.locator("#main-nav")

    # closed: the links are out of the way, nothing scrolls sideways
    expect(button).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(nav).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0

    # a tap opens it: every link on screen, Notifications too, none off to the side
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(nav).to_be_visible()
    notifications = nav.get_by_role("link", name="Notifications")
    expect(notifications).to_be_in_viewport()
    for link in _menu_links(page).all():
        box = link.bounding_box()
        assert box is not None
        assert 0 <= box["x"] <= box["x"] + box["width"] <= width, box
    expect(nav.get_by_role("link", name="My trades")).to_have_attribute("aria-current", "page")
    screenshot(page, f"layout-menu-open-{width}")

    # Escape closes it and gives the focus back to the button
    page.keyboard.press("Escape")
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(nav).to_be_hidden()
    expect(button).to_be_focused()

    # the keyboard alone: Enter opens it, Tab reaches the first link
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Tab")
    expect(_menu_links(page).first).to_be_focused()
    # and a click elsewhere closes it
    page.locator("main h1").click()
    expect(nav).to_be_hidden()


def test_the_desktop_shows_the_links_and_no_menu_button(open_page, alice):
    page = login(open_page(width=1280), "alice")
    page.goto("/trades/")
    expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    expect(page.locator("#main-nav").get_by_role("link", name="Notifications")).to_be_in_viewport()
