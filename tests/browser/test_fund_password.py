"""The fund password in the trade room (issue 15): a release asks for the account password while
2FA is off and for the 2FA code once it is on; a wrong one is refused and changes nothing. Times
show in the browser's zone, and the room counts down to when a dispute may open."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Browser, BrowserContext, Page, expect

from accounts import services as accounts
from accounts.models import Profile
from conftest import wait_for
from escrow import services as escrow
from escrow.models import Trade
from marketplace.tests.factories import make_trade
from tests.browser.helpers import PASSWORD, TIMEOUT_MS, login, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

RELEASE = "details.action-release"


@pytest.fixture
def open_in_zone(
    browser: Browser, live_server: Any, console: Any
) -> Iterator[Callable[[str], Page]]:
    """open_in_zone("Asia/Tokyo") -> a page of a browser that lives in that time zone."""
    contexts: list[BrowserContext] = []

    def _open(zone: str) -> Page:
        context = browser.new_context(
            base_url=live_server.url,
            viewport={"width": 1280, "height": 900},
            locale="en-GB",
            timezone_id=zone,
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return console.watch(context.new_page())

    yield _open
    errors = list(console.errors)
    for context in contexts:
        context.close()
    assert not errors, "the browser reported errors:\n" + "\n".join(errors)


def paid_trade(seller: Any, buyer: Any) -> Trade:
    trade = make_trade(seller, buyer)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=buyer)
    return trade


def totp_code(device: TOTPDevice, *, offset: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + offset * device.step
    return f"{totp.token():0{device.digits}d}"


def state_of(trade: Trade) -> str:
    return Trade.objects.get(pk=trade.pk).state


def test_release_asks_for_the_password_and_a_wrong_one_changes_nothing(
    open_page, console, alice, bob
):
    # given: a paid trade; alice (no 2FA) opens the release confirmation
    console.allow(r"status of 403")  # the refused release answers 403
    trade = paid_trade(alice, bob)
    seller = login(open_page(), "alice")
    seller.goto(f"/trades/{trade.pk}/")
    seller.locator(f"{RELEASE} > summary").click()
    panel = seller.locator(RELEASE)
    expect(panel.get_by_label("Your password")).to_have_attribute("type", "password")
    expect(panel.get_by_label("2FA code")).to_have_count(0)
    screenshot(seller, "fund-password-release-panel")

    # when: a wrong password
    panel.get_by_label("Your password").fill("not-my-password")
    panel.get_by_role("button", name=re.compile(r"^Yes, release")).click()

    # then: refused, named, and the trade is still paid
    expect(seller.get_by_text("password: that is not your account password.")).to_be_visible()
    assert state_of(trade) == Trade.State.PAID
    assert not trade.events.filter(new_state=Trade.State.RELEASING).exists()
    screenshot(seller, "fund-password-release-refused")

    # when: her password
    seller.locator(f"{RELEASE} > summary").click()
    seller.locator(RELEASE).get_by_label("Your password").fill(PASSWORD)
    seller.locator(RELEASE).get_by_role("button", name=re.compile(r"^Yes, release")).click()

    # then: released
    expect(seller.locator(".messages")).to_contain_text("Released")
    assert state_of(trade) in (Trade.State.RELEASING, Trade.State.COMPLETED)


def test_release_asks_for_the_2fa_code_once_2fa_is_on(open_page, console, alice, bob):
    # given: alice turned 2FA on
    console.allow(r"status of 403")
    device, _ = accounts.totp_setup_start(user=alice)
    accounts.totp_setup_confirm(user=alice, token=totp_code(device))
    trade = paid_trade(alice, bob)
    seller = login(open_page(), "alice")
    seller.goto(f"/trades/{trade.pk}/")
    seller.locator(f"{RELEASE} > summary").click()
    panel = seller.locator(RELEASE)
    expect(panel.get_by_label("2FA code")).to_be_visible()
    expect(panel.get_by_label("Your password")).to_have_count(0)

    # when: her password instead of a code is no use; a wrong code is refused
    panel.get_by_label("2FA code").fill("000000" if totp_code(device) != "000000" else "111111")
    panel.get_by_role("button", name=re.compile(r"^Yes, release")).click()
    expect(seller.get_by_text("otp: that code is wrong or was already used.")).to_be_visible()
    assert state_of(trade) == Trade.State.PAID

    # when: the app's next code (the device throttles for a moment after a failure)
    TOTPDevice.objects.get(pk=device.pk).throttle_reset()
    seller.locator(f"{RELEASE} > summary").click()
    seller.locator(RELEASE).get_by_label("2FA code").fill(
        totp_code(TOTPDevice.objects.get(pk=device.pk), offset=1)
    )
    seller.locator(RELEASE).get_by_role("button", name=re.compile(r"^Yes, release")).click()
    expect(seller.locator(".messages")).to_contain_text("Released")
    assert state_of(trade) in (Trade.State.RELEASING, Trade.State.COMPLETED)


def test_the_room_shows_times_in_the_browsers_zone_and_counts_down_to_a_dispute(
    open_in_zone, alice, bob
):
    # given: a paid trade; alice (the buyer) lives in Tokyo: her browser reports it at login
    trade = paid_trade(bob, alice)
    buyer = login(open_in_zone("Asia/Tokyo"), "alice")
    wait_for(lambda: Profile.objects.filter(user=alice, time_zone="Asia/Tokyo").exists())

    # when: the trade room
    buyer.goto(f"/trades/{trade.pk}/")

    # then: the moment a dispute may open is written in Tokyo time (+09:00, JST)
    opens = buyer.locator("time.dispute-opens-at")
    expect(opens).to_have_attribute("datetime", re.compile(r"\+09:00$"))
    expect(opens).to_have_text(re.compile(r"^\d\d:\d\d JST$"))
    expect(buyer.locator("time").first).to_contain_text("JST")
    # and the countdown ticks: its text changes by itself, second by second
    countdown = buyer.locator(".dispute-countdown")
    expect(countdown).to_have_text(re.compile(r"^in \d{1,2}:\d\d$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first)
    expect(countdown).to_have_text(re.compile(r"^in \d{1,2}:\d\d$"))
    screenshot(buyer, "trade-room-tokyo-countdown")
