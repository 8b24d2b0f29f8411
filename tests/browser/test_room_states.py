"""Every state of the trade room, watched live by the buyer at 390 px and then reloaded: each
panel (status, banners, dispute panel, feedback, chat box, tab title) shows the current state,
and none shows text that contradicts it (the issue's "Marked as paid..." above "Completed",
"Open · Waiting for a moderator" after a decision, "Decided" with "A moderator is reviewing it").
The other side's moves are made through the services, as another person's browser would; the
page must follow through its live poll, without a reload. Each state also passes the layout
checks (tests/browser/layout.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.tests.factories import UserFactory
from disputes import services as disputes
from disputes.apps import ensure_moderators_group
from disputes.models import Dispute
from escrow import services as escrow
from escrow.models import Feedback, Settlement, Trade
from marketplace.tests.factories import make_trade
from notifications.models import Notification
from tests.browser.helpers import assert_not_reloaded, login, mark_no_reload, screenshot
from tests.browser.layout import layout_problems

pytestmark = pytest.mark.django_db(transaction=True)

BADGE = "#trade-live .state-badge"
WIDTH = 390

MARKED_PAID = "Marked as paid. The seller has been asked"
RELEASED_FLASH = "Released. The crypto is being settled"
DISPUTE_FLASH = "Dispute opened. A moderator will review"
WAITING = "Waiting for a moderator"
REVIEWING = "A moderator is reviewing it"
DECIDED = "Decided"
CHAT_CLOSED = "This trade is closed; the chat is kept for the record."
LEAVE_FEEDBACK = "Leave feedback"
SETTLING = "Settling…"


@dataclass
class Room:
    """What the room must show in a state, and the texts that would contradict it."""

    label: str
    present: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    chat_open: bool = True
    actions: bool = True


FINAL = [SETTLING, WAITING, REVIEWING, "left to pay", "I have paid"]
ROOMS = {
    "funded": Room(
        "Awaiting payment", ["left to pay"], [CHAT_CLOSED, LEAVE_FEEDBACK, "Dispute #", DECIDED]
    ),
    "paid": Room(
        "Paid · awaiting release",
        ["You marked the trade paid"],
        ["left to pay", CHAT_CLOSED, LEAVE_FEEDBACK, DECIDED],
        actions=False,  # the buyer waits; a dispute opens only after the dispute delay
    ),
    "completed": Room(
        "Completed",
        ["is in your wallet", CHAT_CLOSED, LEAVE_FEEDBACK],
        [MARKED_PAID, RELEASED_FLASH, *FINAL, "Dispute #"],
        chat_open=False,
        actions=False,
    ),
    "cancelled": Room(
        "Cancelled",
        ["This trade was cancelled", CHAT_CLOSED],
        [LEAVE_FEEDBACK, *FINAL],
        chat_open=False,
        actions=False,
    ),
    "expired": Room(
        "Expired",
        ["The payment window ended before", CHAT_CLOSED],
        [LEAVE_FEEDBACK, *FINAL, "Awaiting payment"],
        chat_open=False,
        actions=False,
    ),
    "disputed": Room(
        "In dispute",
        ["This trade is in dispute", WAITING],
        [REVIEWING, DECIDED, CHAT_CLOSED, LEAVE_FEEDBACK, MARKED_PAID],
        actions=False,
    ),
    "assigned": Room(
        "In dispute",
        [REVIEWING],
        [WAITING, DECIDED, CHAT_CLOSED, LEAVE_FEEDBACK, DISPUTE_FLASH],
        actions=False,
    ),
    "refunded": Room(
        "Refunded",
        ["A moderator decided for the seller", f"· {DECIDED}", "Decision: Refund the seller"],
        [*FINAL, "In dispute", DISPUTE_FLASH, "Add evidence", "This trade is in dispute"],
        chat_open=False,
        actions=False,
    ),
}


def check(page: Page, trade: Trade, state: str) -> None:
    """The room in `state`: the badge, the title, what must be there and what must not; a fail
    names the state and the text."""
    room = ROOMS[state]
    expect(page.locator(BADGE)).to_have_text(room.label)
    expect(page).to_have_title(re.compile("^" + re.escape(f"Trade #{trade.pk} · {room.label}")))
    main = page.locator("main")
    for text in room.present:
        expect(main, f"{state}: shows {text!r}").to_contain_text(text, use_inner_text=True)
    for text in room.absent:
        expect(main, f"{state}: no {text!r}").not_to_contain_text(text, use_inner_text=True)
    expect(page.locator("#chat form.chat-form")).to_have_count(1 if room.chat_open else 0)
    expect(page.locator("#trade-live .actions")).to_have_count(1 if room.actions else 0)
    problems = layout_problems(page, f"room {state}")
    assert not problems, "\n".join(problems)
    screenshot(page, f"room-{state}-{WIDTH}")


def check_live_then_reloaded(page: Page, trade: Trade, state: str) -> None:
    check(page, trade, state)
    assert_not_reloaded(page)
    page.reload()
    check(page, trade, state)
    mark_no_reload(page)


def settle(trade: Trade) -> None:
    escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)


def moderator():
    ensure_moderators_group()
    user = UserFactory(username="mod", is_staff=True)
    user.groups.add(Group.objects.get(name="Moderators"))
    return type(user).objects.get(pk=user.pk)


def _confirm(page: Page, action: str, button: str) -> None:
    page.locator(f"details.action-{action} > summary").click()
    page.locator(f"details.action-{action}").get_by_role("button", name=button).click()


def test_completed_with_feedback_from_both_sides(open_page, alice, bob):
    trade = make_trade(alice, bob)
    buyer = login(open_page(width=WIDTH), "bob")
    buyer.goto(f"/trades/{trade.pk}/")
    check(buyer, trade, "funded")

    # bob marks it paid: the banner says so, for as long as it is true
    _confirm(buyer, "mark-paid", "Yes, I have paid")
    expect(buyer.locator(".messages")).to_contain_text(MARKED_PAID)
    check(buyer, trade, "paid")
    mark_no_reload(buyer)
    buyer.locator("#chat-text").fill("Half-typed, kept while the room redraws")

    # alice releases and the settlement posts: bob's page follows, every panel with it
    escrow.escrow_release(trade_id=trade.pk, actor=alice)
    settle(trade)
    expect(buyer.locator(BADGE)).to_have_text("Completed")
    check_live_then_reloaded(buyer, trade, "completed")

    # both are asked for feedback by a notification, once each, that leads to the room
    prompts = Notification.objects.filter(trade=trade, kind=Notification.Kind.FEEDBACK)
    assert sorted(prompts.values_list("user__username", flat=True)) == ["alice", "bob"]
    buyer.goto("/notifications/")
    buyer.get_by_role("button", name=re.compile(f"Trade #{trade.pk} is done")).click()
    expect(buyer).to_have_url(re.compile(rf"/trades/{trade.pk}/#feedback$"))

    # bob rates alice in the room
    panel = buyer.locator("#feedback")
    panel.get_by_label("Positive").check()
    panel.get_by_label(re.compile("^Comment")).fill("Released within minutes.")
    panel.get_by_role("button", name=LEAVE_FEEDBACK).click()
    expect(buyer.locator(".messages")).to_contain_text("your feedback is on their profile")
    expect(buyer.locator("#feedback")).to_contain_text("You rated alice")
    expect(buyer.locator("#feedback form")).to_have_count(0)

    # alice rates bob from her side, and sees his rating of her
    seller = login(open_page(width=WIDTH), "alice")
    seller.goto(f"/trades/{trade.pk}/")
    expect(seller.locator("#feedback")).to_contain_text("bob rated you")
    seller.locator("#feedback").get_by_label("Negative").check()
    seller.locator("#feedback").get_by_role("button", name=LEAVE_FEEDBACK).click()
    expect(seller.locator("#feedback")).to_contain_text("You rated bob")
    ratings = dict(Feedback.objects.filter(trade=trade).values_list("author__username", "rating"))
    assert ratings == {"bob": "positive", "alice": "negative"}

    # once each: a second try (an old tab) is refused and changes nothing
    response = seller.request.post(
        f"/trades/{trade.pk}/feedback/",
        form={
            "rating": "positive",
            "csrfmiddlewaretoken": seller.locator("[name=csrfmiddlewaretoken]").first.input_value(),
        },
        headers={"Referer": seller.url},
    )
    assert response.status == 409
    assert Feedback.objects.filter(trade=trade).count() == 2

    # alice sees bob's rating on her profile and replies to it there
    seller.goto("/u/alice/")
    item = seller.locator(".feedback-item", has_text="Released within minutes.")
    expect(item).to_contain_text("bob")
    item.locator("summary", has_text="Reply").click()
    item.get_by_label("Your reply").fill("Thanks, a pleasure.")
    item.get_by_role("button", name="Publish reply").click()
    expect(seller.locator(".messages")).to_contain_text("Your reply is published")
    expect(seller.locator(".feedback-item", has_text="Released within minutes.")).to_contain_text(
        "Thanks, a pleasure."
    )
    # and bob's profile shows alice's rating of him
    buyer.goto("/u/bob/")
    expect(buyer.locator(".feedback-item")).to_contain_text("Negative")


def test_cancelled_live(open_page, alice, bob):
    trade = make_trade(alice, bob)
    buyer = login(open_page(width=WIDTH), "bob")
    buyer.goto(f"/trades/{trade.pk}/")
    mark_no_reload(buyer)
    escrow.trade_cancel(trade_id=trade.pk, actor=bob)  # from bob's other tab
    check_live_then_reloaded(buyer, trade, "cancelled")


def test_expired_live(open_page, alice, bob):
    trade = make_trade(alice, bob)
    buyer = login(open_page(width=WIDTH), "bob")
    buyer.goto(f"/trades/{trade.pk}/")
    mark_no_reload(buyer)
    Trade.objects.filter(pk=trade.pk).update(payment_deadline=timezone.now() - timedelta(seconds=1))
    escrow.trades_expire_overdue()
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.EXPIRED
    check_live_then_reloaded(buyer, trade, "expired")


def test_disputed_assigned_and_decided_live(open_page, alice, bob):
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - timedelta(minutes=11))
    mod = moderator()
    buyer = login(open_page(width=WIDTH), "bob")
    buyer.goto(f"/trades/{trade.pk}/")
    mark_no_reload(buyer)

    # alice opens a dispute: bob's room shows the panel without a reload
    dispute = disputes.dispute_open(
        trade_id=trade.pk, actor=alice, category="not_received", text="Nothing arrived at all."
    )
    check_live_then_reloaded(buyer, trade, "disputed")
    buyer.locator("#ev-statement").fill("My bank's reference is 1234.")

    # a moderator takes it (the trade's state doesn't change): the panel follows
    disputes.dispute_assign(dispute_id=dispute.pk, actor=mod)
    expect(buyer.locator("#dispute")).to_contain_text(REVIEWING)
    # what bob was typing survived the redraw
    expect(buyer.locator("#ev-statement")).to_have_value("My bank's reference is 1234.")
    check_live_then_reloaded(buyer, trade, "assigned")

    # the decision and its settlement
    disputes.dispute_decide(
        dispute_id=dispute.pk, actor=mod, outcome="refund", reason="No payment was shown."
    )
    settle(trade)
    assert Dispute.objects.get(pk=dispute.pk).status == Dispute.Status.DECIDED
    check_live_then_reloaded(buyer, trade, "refunded")
    # a decided dispute opens feedback too
    expect(buyer.locator("#feedback")).to_contain_text("How was trading with alice?")
