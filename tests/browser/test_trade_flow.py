"""A trade through the browser: two people in two browser contexts, pages that update by
themselves (htmx polls the trade room every 3 s), a real Celery worker settling the release."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from conftest import wait_for
from disputes.models import Dispute
from escrow.models import Settlement, Trade
from escrow.tasks import expire_overdue_trades
from ledger.models import Transfer
from ledger.selectors import balance_available
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_trade
from tests.browser.helpers import (
    PASSWORD,
    PNG,
    assert_not_reloaded,
    login,
    mark_no_reload,
    screenshot,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

# The state badge of the live part of the trade room (what htmx swaps).
BADGE = "#trade-live .state-badge"
COULD_NOT_MARK_PAID = Dispute.Category.COULD_NOT_MARK_PAID


def _state(trade_id: int) -> str:
    return Trade.objects.values_list("state", flat=True).get(pk=trade_id)


def _confirm(page: Page, action: str, button: str) -> None:
    """Open an action's confirmation dialog in the trade room and confirm it."""
    page.locator(f"details.action-{action} > summary").click()
    if action == "release":  # the fund password (no 2FA here)
        page.locator("details.action-release").get_by_label("Your password").fill(PASSWORD)
    page.locator(f"details.action-{action}").get_by_role("button", name=button).click()


def test_a_trade_from_offer_to_completion_in_two_browsers(
    celery_worker_process, open_page, alice, bob
):
    fund(alice, "BTC", "1")
    seller = login(open_page(), "alice")
    buyer = login(open_page(), "bob")

    # alice posts a sell offer through the offer form
    seller.goto("/offers/new/")
    seller.get_by_label("I want to sell").check()
    seller.get_by_label("Crypto", exact=True).select_option("BTC")
    seller.get_by_label("For currency").select_option("EUR")
    seller.get_by_label("Fixed price", exact=True).check()
    seller.get_by_label("Fixed price (per 1 unit)").fill("80000")
    seller.get_by_label("Total amount of crypto").fill("0.1")
    seller.get_by_label("Minimum per trade").fill("50")
    seller.get_by_label("Maximum per trade").fill("5000")
    seller.get_by_label("SEPA transfer").check()
    seller.get_by_label("Payment window").select_option("30")
    seller.get_by_label("Terms (optional)").fill("SEPA instant only.")
    seller.get_by_role("button", name="Publish offer").click()
    expect(seller.locator(".messages")).to_contain_text("is live in the order book")
    offer = Offer.objects.get(maker=alice)
    assert offer.amount == Decimal("0.1")

    # bob finds it in the order book and takes it for 800 EUR
    buyer.goto("/?side=buy&asset=BTC&fiat=EUR")
    row = buyer.locator("article.offer-row", has_text="alice")
    expect(row).to_contain_text("80,000.00")
    row.get_by_role("link", name="Buy BTC").click()
    expect(buyer).to_have_url(re.compile(rf"/offers/{offer.pk}/$"))
    buyer.get_by_label("I want to pay").fill("800")
    expect(buyer.locator("#take-preview")).to_contain_text("0.01000000 BTC")
    buyer.locator("#take-form").get_by_role("button", name="Buy BTC").click()
    expect(buyer.locator(".messages")).to_contain_text("opened")
    trade = Trade.objects.get(offer=offer)
    assert (trade.buyer, trade.seller, trade.amount) == (bob, alice, Decimal("0.01"))
    expect(buyer).to_have_url(re.compile(rf"/trades/{trade.pk}/$"))
    expect(buyer.locator(BADGE)).to_have_text("Awaiting payment")
    expect(buyer.locator(".countdown")).to_contain_text("left to pay")

    # alice opens the trade from "My trades" and watches it
    seller.goto("/trades/")
    seller.get_by_role("link", name=f"#{trade.pk}").click()
    expect(seller.locator(BADGE)).to_have_text("Awaiting payment")
    mark_no_reload(seller)

    # bob writes in the trade chat and attaches his proof of payment; alice sees it live
    chat = buyer.locator("#chat")
    chat.get_by_label("Message").fill("Sent 800 EUR by SEPA instant, proof attached.")
    chat.get_by_label("Attach payment proof").set_input_files(
        {"name": "proof.png", "mimeType": "image/png", "buffer": PNG}
    )
    chat.get_by_role("button", name="Send").click()
    expect(buyer.locator("#chat-list .chat-msg.mine")).to_contain_text("proof attached")
    expect(buyer.locator("#chat-text")).to_have_value("")
    message = seller.locator("#chat-list .chat-msg", has_text="proof attached")
    expect(message).to_contain_text("bob")
    # an image shows as a thumbnail, served (like its click-through) by the permission check
    thumb = message.locator("a.chat-file img.thumb")
    expect(thumb).to_be_visible()
    expect(thumb).to_have_attribute("alt", re.compile("proof.png"))
    assert thumb.get_attribute("src") == message.locator("a.chat-file").get_attribute("href")
    # the image loads (polled: the browser fetches it after the message appears)
    seller.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle(), timeout=15000
    )
    proof = seller.request.get(message.locator("a.chat-file").get_attribute("href"))
    assert proof.ok
    assert (proof.headers["content-type"], proof.body()) == ("image/png", PNG)
    assert_not_reloaded(seller)

    # bob marks it paid, through the confirmation
    _confirm(buyer, "mark-paid", "Yes, I have paid")
    expect(buyer.locator(".messages")).to_contain_text("Marked as paid")
    expect(buyer.locator(BADGE)).to_have_text("Paid · awaiting release")
    mark_no_reload(buyer)

    # alice's page shows it without a reload (the htmx poll)
    expect(seller.locator(BADGE)).to_have_text("Paid · awaiting release")
    expect(seller.locator("#trade-live .status-text")).to_contain_text("bob says they sent")
    assert_not_reloaded(seller)

    # alice releases, through the confirmation
    _confirm(seller, "release", "Yes, release 0.01000000 BTC")
    expect(seller.locator(".messages")).to_contain_text("Released")

    # the worker settles it; both pages show "Completed" without a reload
    expect(buyer.locator(BADGE)).to_have_text("Completed")
    expect(buyer.locator("#trade-live")).to_have_attribute("data-state", "completed")
    expect(buyer.locator("#trade-live .status-text")).to_contain_text("is in your wallet")
    assert_not_reloaded(buyer)
    screenshot(buyer, "trade-room-completed-1280")
    expect(seller.locator(BADGE)).to_have_text("Completed")
    trade.refresh_from_db()
    assert trade.state == Trade.State.COMPLETED
    assert Transfer.objects.filter(reference=trade.pk, kind="trade_payout").count() == 1
    assert balance_available(user=bob, asset_code="BTC") == trade.buyer_receives


def test_a_trade_expires_while_the_buyer_watches(celery_worker_process, open_page, alice, bob):
    trade = make_trade(alice, bob)
    buyer = login(open_page(), "bob")
    # the payment window now ends in a few seconds
    deadline = timezone.now() + timedelta(seconds=4)
    Trade.objects.filter(pk=trade.pk).update(payment_deadline=deadline)
    buyer.goto(f"/trades/{trade.pk}/")
    expect(buyer.locator(BADGE)).to_have_text("Awaiting payment")
    expect(buyer.locator(".countdown")).to_contain_text("left to pay")
    mark_no_reload(buyer)

    # the window ends: the countdown says so, then the sweeper expires the trade
    wait_for(lambda: timezone.now() >= deadline, timeout=10)
    expect(buyer.locator(".countdown")).to_have_text(re.compile("Time is up|Payment window ended"))
    expire_overdue_trades.delay()
    wait_for(lambda: _state(trade.pk) == Trade.State.EXPIRED)

    # and the page shows it without a reload
    expect(buyer.locator(BADGE)).to_have_text("Expired")
    expect(buyer.locator("#trade-live")).to_have_attribute("data-state", "expired")
    expect(buyer.locator("#trade-live .status-text")).to_contain_text(
        "The payment window ended before the trade was marked paid"
    )
    expect(buyer.locator("#trade-live .actions")).to_have_count(0)
    assert_not_reloaded(buyer)
    screenshot(buyer, "trade-room-expired-1280")
    assert balance_available(user=alice, asset_code="BTC") == Decimal("1")


def test_the_buyer_opens_a_dispute_from_a_funded_trade(open_page, alice, bob):
    trade = make_trade(alice, bob)
    buyer = login(open_page(), "bob")
    buyer.goto(f"/trades/{trade.pk}/")
    reason = "I paid at 14:05 by SEPA, ref 1234, but could not mark the trade paid."

    buyer.locator("details.action-dispute > summary").click()
    dialog = buyer.locator("details.action-dispute")
    dialog.get_by_label("What happened?").select_option(label=str(COULD_NOT_MARK_PAID.label))
    dialog.get_by_label("Describe it for the moderator").fill(reason)
    dialog.get_by_role("button", name="Open the dispute").click()

    expect(buyer.locator(".messages")).to_contain_text("Dispute opened")
    expect(buyer.locator("#trade-live")).to_have_attribute("data-state", "disputed")
    expect(buyer.locator(BADGE)).to_have_text("In dispute")
    expect(buyer.locator("#dispute")).to_contain_text(str(COULD_NOT_MARK_PAID.label))
    expect(buyer.locator("#trade-live .actions")).to_have_count(0)
    screenshot(buyer, "trade-room-disputed-1280")
    assert _state(trade.pk) == Trade.State.DISPUTED
    dispute = Dispute.objects.get(trade=trade)
    assert (dispute.opened_by, dispute.category, dispute.text) == (bob, COULD_NOT_MARK_PAID, reason)
    assert not Settlement.objects.filter(trade=trade).exists()
