"""Saved payment accounts end to end, in two (then three) browser contexts: alice saves a Revolut
and an IBAN account in Settings and names them on a sell offer; bob takes it by Revolut and sees
alice's Revolut details with copy buttons that really copy; carol cannot read them over the API;
alice edits her account and the open trade still shows what it was opened with. The new room
block is checked for horizontal overflow at 1280 and 390 px."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from escrow.models import Trade
from marketplace.models import Offer, PaymentAccount
from marketplace.tests.factories import fund
from tests.browser.helpers import login, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

BLOCK = "#payment-details"


def _save_account(page: Page, method: str, fields: dict[str, str]) -> None:
    page.goto("/settings/")
    page.get_by_label("Add an account for").select_option(label=method)
    page.get_by_role("button", name="Add account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"New {method} account")
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Save account").click()
    expect(page.locator(".messages")).to_contain_text(f"{method} account saved.")
    expect(page).to_have_url(re.compile(r"/settings/#payment-accounts$"))


def _overflow(page: Page, selector: str) -> list[str]:
    """What sticks out of the block sideways: the block wider than its box, or any element in it
    reaching past the block's right edge or the viewport's."""
    return page.eval_on_selector(
        selector,
        """(block) => {
            const out = [];
            const box = block.getBoundingClientRect();
            if (block.scrollWidth > block.clientWidth + 1) out.push("block scrolls sideways");
            for (const el of block.querySelectorAll("*")) {
                const r = el.getBoundingClientRect();
                if (r.width === 0 && r.height === 0) continue;
                if (r.right > box.right + 1 || r.right > window.innerWidth + 1 || r.left < box.left - 1)
                    out.push(el.tagName + "." + el.className + ": " + Math.round(r.left) + "-" + Math.round(r.right));
            }
            return out;
        }""",
    )


def test_the_buyer_sees_and_copies_the_sellers_saved_account(open_page, console, alice, bob, carol):
    console.allow(r"status of 400")  # the IBAN with a typo, answered 400 on purpose
    fund(alice, "BTC", "1")
    seller = login(open_page(), "alice")
    buyer = login(open_page(), "bob")
    buyer.context.grant_permissions(["clipboard-read", "clipboard-write"])

    # alice saves a Revolut account and an IBAN (SEPA) account in Settings
    _save_account(seller, "Revolut", {"Account holder": "Alice Martin", "Revtag": "@alicem"})
    _save_account(
        seller,
        "SEPA transfer",
        {"Account holder": "Alice Martin", "IBAN": "de89 3704 0044 0532 0130 00"},
    )
    listed = seller.locator("#payment-accounts .payment-account")
    expect(listed).to_have_count(2)
    expect(seller.locator("#payment-accounts")).to_contain_text("DE89 3704 0044 0532 0130 00")

    # a typo in an IBAN is refused, naming the field
    seller.goto("/settings/payment-accounts/new/?method=sepa")
    seller.get_by_label("Account holder", exact=True).fill("Alice Martin")
    seller.get_by_label("IBAN", exact=True).fill("DE89 3704 0044 0532 0130 01")
    seller.get_by_role("button", name="Save account").click()
    expect(seller.locator("#field-iban .field-error")).to_contain_text("check digits")
    assert PaymentAccount.objects.filter(user=alice).count() == 2

    # she names both on a sell offer
    seller.goto("/offers/new/")
    seller.get_by_label("I want to sell").check()
    seller.get_by_label("Crypto", exact=True).select_option("BTC")
    seller.get_by_label("For currency").select_option("EUR")
    seller.get_by_label("Fixed price", exact=True).check()
    seller.get_by_label("Fixed price (per 1 unit)").fill("80000")
    seller.get_by_label("Total amount of crypto").fill("0.1")
    seller.get_by_label("Minimum per trade").fill("50")
    seller.get_by_label("Maximum per trade").fill("5000")
    seller.get_by_label("SEPA transfer", exact=True).check()
    seller.get_by_label("Revolut", exact=True).check()
    seller.get_by_label(re.compile(r"Revolut · @alicem")).check()
    seller.get_by_label(re.compile(r"SEPA transfer · DE89")).check()
    seller.get_by_role("button", name="Publish offer").click()
    expect(seller.locator(".messages")).to_contain_text("is live in the order book")
    offer = Offer.objects.get(maker=alice)
    assert {a.method.code for a in offer.payment_accounts.all()} == {"revolut", "sepa"}

    # bob takes it, paying by Revolut
    buyer.goto(f"/offers/{offer.pk}/")
    buyer.get_by_label("I want to pay").fill("100")
    buyer.get_by_label("Payment method").select_option("revolut")
    buyer.locator("#take-form").get_by_role("button", name="Buy BTC").click()
    expect(buyer.locator(".messages")).to_contain_text("opened")
    trade = Trade.objects.get(offer=offer)

    # the room shows alice's Revolut details, with copy buttons
    block = buyer.locator(BLOCK)
    expect(block.get_by_role("heading")).to_have_text("Pay into this account")
    expect(block).to_contain_text("Revolut")
    expect(block).to_contain_text("Alice Martin")
    expect(block).not_to_contain_text("DE89")  # the SEPA account is not this trade's
    copy_tag = block.locator("button.copy-btn[data-copy='@alicem']")
    expect(copy_tag).to_be_visible()
    copy_tag.click()
    expect(copy_tag).to_have_text("Copied")
    assert buyer.evaluate("navigator.clipboard.readText()") == "@alicem"
    block.locator("button.copy-btn[data-copy='Alice Martin']").click()
    assert buyer.evaluate("navigator.clipboard.readText()") == "Alice Martin"

    # no sideways overflow of the block, on a desktop and on a phone
    assert _overflow(buyer, BLOCK) == []
    screenshot(buyer, "payment-details-1280")
    buyer.set_viewport_size({"width": 390, "height": 844})
    expect(copy_tag).to_be_visible()
    assert _overflow(buyer, BLOCK) == []
    block.scroll_into_view_if_needed()
    screenshot(buyer, "payment-details-390")

    # over the API: bob sees the details, carol (a third trader) sees nothing of the trade
    mine = buyer.request.get(f"/api/v1/trades/{trade.pk}/")
    assert mine.ok
    assert mine.json()["payment_account"]["details"][1]["value"] == "@alicem"
    third = login(open_page(), "carol")
    theirs = third.request.get(f"/api/v1/trades/{trade.pk}/")
    assert theirs.status == 404
    assert "alicem" not in theirs.text()

    # alice changes her Revtag: her account changes, the open trade keeps the old one
    seller.goto("/settings/")
    seller.get_by_role("link", name=re.compile(r"^Edit Revolut")).click()
    seller.get_by_label("Revtag", exact=True).fill("@alice_new")
    seller.get_by_role("button", name="Save changes").click()
    expect(seller.locator(".messages")).to_contain_text("Open trades keep the old one")
    expect(seller.locator("#payment-accounts")).to_contain_text("@alice_new")
    buyer.reload()
    expect(buyer.locator(BLOCK)).to_contain_text("@alicem")
    expect(buyer.locator(BLOCK)).not_to_contain_text("@alice_new")
    # and alice, the seller, sees which of her accounts the buyer was given
    seller.goto(f"/trades/{trade.pk}/")
    expect(seller.locator(BLOCK).get_by_role("heading")).to_have_text(
        "Your account the buyer pays into"
    )
    expect(seller.locator(BLOCK)).to_contain_text("@alicem")
