"""Live push in two browsers (issue 18): a real uvicorn process serves the WebSockets beside the
live HTTP server. bob's "paid" reaches alice's room through the socket (the click-to-DOM time is
measured in the browsers and printed; bench/live.py holds the server-side figures), chat goes both
ways with an attachment, the badge counts up; with the socket server killed the room falls back
to polling and still updates, and after a restart it resumes from its last id with no event
missed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from marketplace.tests.factories import make_trade
from notifications.live import events
from tests.browser.helpers import PNG, assert_not_reloaded, login, mark_no_reload
from tests.live_ws import WsServer, free_port

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws_server(live_server: Any, settings: Any) -> Iterator[WsServer]:
    """The WebSocket server for this test; pages learn its URL from LIVE_WS_URL (on the live
    server's host name, so the session cookie goes along) and CSP lets them connect to it."""
    server = WsServer(free_port())
    host = urlsplit(live_server.url).hostname
    settings.LIVE_ENABLED = True
    settings.LIVE_WS_URL = f"ws://{host}:{server.port}/ws/v1/live/"
    policy = {**settings.CONTENT_SECURITY_POLICY}
    directives = {**policy["DIRECTIVES"]}
    directives["connect-src"] = [*directives["connect-src"], f"ws://{host}:{server.port}"]
    settings.CONTENT_SECURITY_POLICY = {**policy, "DIRECTIVES": directives}
    server.start()
    yield server
    server.stop()


LIVE = ".live-status[data-state=live]"
RECONNECTING = ".live-status[data-state=reconnecting]"


def _badge(page: Page) -> int:
    badge = page.locator("#main-nav .badge-count")
    return int(badge.inner_text()) if badge.count() else 0


def _watch_state(page: Page, state: str) -> None:
    """Record (Date.now()) when the room's state badge first shows `state`, and what triggered
    each htmx request the page sends ("live-refresh": the socket; "poll": the every-3s timer)."""
    page.evaluate(
        """(state) => {
          window.__stateAt = null;
          window.__sent = [];
          document.body.addEventListener('htmx:beforeSend', (e) => {
            const why = e.detail.requestConfig && e.detail.requestConfig.triggeringEvent;
            window.__sent.push(why ? why.type : 'poll');
          });
          const seen = () => {
            const room = document.querySelector('#trade-live');
            if (!window.__stateAt && room && room.dataset.state === state) window.__stateAt = Date.now();
          };
          new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, attributes: true});
        }""",
        state,
    )


def test_two_browsers_see_each_other_live_and_fall_back_to_polling(
    ws_server, open_page, console, alice, bob
):
    # while the socket server is down, the browser logs each refused reconnect
    console.allow(r"WebSocket connection to .* failed")
    trade = make_trade(alice, bob)  # alice sells, bob buys
    seller = login(open_page(), "alice")
    buyer = login(open_page(), "bob")
    room = f"/trades/{trade.pk}/"
    for page in (seller, buyer):
        page.goto(room)
        expect(page.locator(LIVE)).to_have_text("Live")
    mark_no_reload(seller)
    unread_before = _badge(seller)

    # bob marks the trade paid; alice's room shows it through the socket
    _watch_state(seller, "paid")
    buyer.evaluate(
        """() => document.addEventListener('click', () => {
             sessionStorage.setItem('clickAt', String(Date.now()));
           }, {capture: true, once: false})"""
    )
    buyer.locator("details.action-mark-paid > summary").click()
    buyer.locator("details.action-mark-paid").get_by_role("button", name="Yes, I have paid").click()
    expect(seller.locator("#trade-live")).to_have_attribute("data-state", "paid")
    expect(buyer.locator("#trade-live")).to_have_attribute("data-state", "paid")
    clicked = int(buyer.evaluate("sessionStorage.getItem('clickAt')"))
    shown = int(seller.evaluate("window.__stateAt"))
    elapsed = shown - clicked
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "live-latency.txt").write_text(f"click to DOM change: {elapsed} ms\n")
    print(f"\nlive: bob's click to alice's DOM change: {elapsed} ms")
    # pushed, not polled: every request alice's page sent meanwhile was a socket-triggered refresh
    sent = seller.evaluate("window.__sent")
    assert sent, "alice's room was not refreshed"
    assert set(sent) == {"live-refresh"}, sent
    # the badge counted the notification of the move, without a reload
    expect(seller.locator("#main-nav .badge-count")).to_have_text(str(unread_before + 1))
    # and says it in words as the page header does (the label's forms came with the page)
    expect(seller.locator("#main-nav .badge-count")).to_have_attribute(
        "aria-label", f"{unread_before + 1} unread"
    )
    assert_not_reloaded(seller)

    # chat both ways, with an attachment
    chat = seller.locator("#chat")
    chat.get_by_label("Message").fill("Got it? Receipt attached.")
    chat.get_by_label("Attach payment proof").set_input_files(
        {"name": "receipt.png", "mimeType": "image/png", "buffer": PNG}
    )
    chat.get_by_role("button", name="Send").click()
    from_alice = buyer.locator("#chat-list .chat-msg", has_text="Receipt attached")
    expect(from_alice.locator("a.chat-file img.thumb")).to_be_visible()
    buyer.locator("#chat").get_by_label("Message").fill("Yes, thanks")
    buyer.locator("#chat").get_by_role("button", name="Send").click()
    expect(seller.locator("#chat-list .chat-msg", has_text="Yes, thanks")).to_be_visible()

    # the socket server dies: both rooms say so and poll again; bob's message still arrives
    ws_server.stop()
    expect(seller.locator(RECONNECTING)).to_be_visible()
    buyer.locator("#chat").get_by_label("Message").fill("Are you there?")
    buyer.locator("#chat").get_by_role("button", name="Send").click()
    expect(seller.locator("#chat-list .chat-msg", has_text="Are you there?")).to_be_visible()

    # back up: it reconnects and resumes from its last id, up to the newest event for alice
    # (those written while it was down included)
    newest = events.last_id(user_id=alice.pk)
    ws_server.start()
    expect(seller.locator(LIVE)).to_have_text("Live")
    expect(seller.locator("html")).to_have_attribute("data-live-last", newest)
    # and pushes again: bob's next word arrives through the socket
    buyer.locator("#chat").get_by_label("Message").fill("Back online")
    buyer.locator("#chat").get_by_role("button", name="Send").click()
    expect(seller.locator("#chat-list .chat-msg", has_text="Back online")).to_be_visible()
    assert_not_reloaded(seller)
