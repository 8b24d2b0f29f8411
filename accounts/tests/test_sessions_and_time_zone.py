"""Sessions on the settings page (issue 15): each logged-in browser with its device and times,
revocable one by one or all others, server-side. Times in the user's zone: reported by the
browser, validated against zoneinfo, activated per request; the trade room counts down to when
a dispute may open."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import selectors, services
from accounts.models import BrowserSession, Profile
from escrow import services as escrow
from marketplace.tests.factories import make_trade

pytestmark = pytest.mark.django_db

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def browser(user, user_agent: str) -> Client:
    client = Client(HTTP_USER_AGENT=user_agent)
    client.force_login(user)
    client.get(reverse("settings"))  # a first request from it, with its user agent
    return client


@pytest.mark.parametrize(
    ("user_agent", "summary"),
    [
        (CHROME_WINDOWS, "Chrome 126 on Windows"),
        (SAFARI_IPHONE, "Safari 17 on iPhone"),
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Firefox 128 on Linux",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0",
            "Edge 125 on Windows",
        ),
        ("python-requests/2.32.3", "python-requests/2.32.3"),
        ("", "Unknown device"),
    ],
)
def test_device_summary(user_agent, summary):
    assert selectors.device_summary(user_agent) == summary


def test_two_browsers_are_listed_and_one_is_logged_out_from_the_other(alice, bob):
    # given: alice on Windows and on her iPhone, and bob somewhere else
    desk = browser(alice, CHROME_WINDOWS)
    phone = browser(alice, SAFARI_IPHONE)
    browser(bob, CHROME_WINDOWS)

    # when: she opens the settings page on the desk
    html = desk.get(reverse("settings")).content.decode()

    # then: both of hers are listed with device and times, bob's is not
    rows = selectors.browser_session_list_for_user(user=alice)
    assert sorted(r.device for r in rows) == ["Chrome 126 on Windows", "Safari 17 on iPhone"]
    assert "2 browsers logged in" in html
    assert "Chrome 126 on Windows" in html
    assert "Safari 17 on iPhone" in html
    assert html.count("This browser") == 1
    assert all(r.created_at <= r.last_seen for r in rows)

    # when: she logs the phone out from the desk
    phone_row = next(r for r in rows if r.device.startswith("Safari"))
    done = desk.post(reverse("settings_session_revoke", args=[phone_row.pk]))

    # then: the phone's session is gone server-side; the desk goes on
    assert done.status_code == 302
    assert not Session.objects.filter(session_key=phone_row.session_key).exists()
    assert phone.get(reverse("settings")).status_code == 302  # to the login page
    assert desk.get(reverse("settings")).status_code == 200
    assert [r.device for r in selectors.browser_session_list_for_user(user=alice)] == [
        "Chrome 126 on Windows"
    ]


def test_the_current_session_and_someone_elses_cannot_be_revoked(alice, bob):
    desk = browser(alice, CHROME_WINDOWS)
    browser(bob, SAFARI_IPHONE)
    own = BrowserSession.objects.get(user=alice)
    bobs = BrowserSession.objects.get(user=bob)

    refused = desk.post(reverse("settings_session_revoke", args=[own.pk]), follow=True)
    assert "That is the browser you are using" in refused.content.decode()
    assert desk.post(reverse("settings_session_revoke", args=[bobs.pk])).status_code == 404
    assert Session.objects.filter(session_key__in=[own.session_key, bobs.session_key]).count() == 2


def test_log_out_all_other_browsers(alice):
    desk = browser(alice, CHROME_WINDOWS)
    phone = browser(alice, SAFARI_IPHONE)
    laptop = browser(alice, "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128")

    desk.post(reverse("settings_sessions_end_others"))

    assert phone.get(reverse("settings")).status_code == 302
    assert laptop.get(reverse("settings")).status_code == 302
    assert [r.device for r in selectors.browser_session_list_for_user(user=alice)] == [
        "Chrome 126 on Windows"
    ]


def test_a_logged_out_session_is_not_listed(alice):
    desk = browser(alice, CHROME_WINDOWS)
    phone = browser(alice, SAFARI_IPHONE)
    phone.post(reverse("logout"))
    assert [r.device for r in selectors.browser_session_list_for_user(user=alice)] == [
        "Chrome 126 on Windows"
    ]
    assert desk.get(reverse("settings")).status_code == 200


# --- time zone ------------------------------------------------------------------------------


def test_the_browser_reports_its_zone_once_and_nonsense_is_refused(alice):
    client = Client()
    client.force_login(alice)
    url = reverse("settings_time_zone")
    fetch = {"HTTP_X_REQUESTED_WITH": "fetch"}

    refused = client.post(url, {"time_zone": "Mars/Olympus_Mons"}, **fetch)
    assert refused.status_code == 400
    assert "time_zone: Unknown time zone 'Mars/Olympus_Mons'" in refused.content.decode()
    assert selectors.profile_for(alice).time_zone == ""

    assert client.post(url, {"time_zone": "Asia/Tokyo"}, **fetch).status_code == 204
    assert Profile.objects.get(user=alice).time_zone == "Asia/Tokyo"
    page = client.get(reverse("settings")).content.decode()
    assert '<meta name="user-time-zone" content="Asia/Tokyo"' in page

    # chosen by hand on the settings page
    by_hand = client.post(url, {"time_zone": "Europe/Berlin"})
    assert by_hand.status_code == 302
    assert Profile.objects.get(user=alice).time_zone == "Europe/Berlin"


def test_the_trade_room_shows_times_in_the_users_zone_and_counts_down_to_a_dispute(alice, bob):
    # given: a paid trade, bob in Tokyo, alice without a zone (UTC)
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    services.profile_time_zone_set(user=bob, time_zone="Asia/Tokyo")
    trade.refresh_from_db()
    opens_at = escrow.dispute_opens_at(trade)
    assert opens_at is not None

    # when
    tokyo, utc = Client(), Client()
    tokyo.force_login(bob)
    utc.force_login(alice)
    bobs = tokyo.get(f"/trades/{trade.pk}/").content.decode()
    alices = utc.get(f"/trades/{trade.pk}/").content.decode()

    # then: the same moment, each in their own zone, and the countdown's target in seconds
    local = timezone.localtime(opens_at, timezone=timezone.get_fixed_timezone(timedelta(hours=9)))
    assert f'datetime="{local.isoformat()}"' in bobs
    assert f"{local:%H:%M} JST" in bobs
    assert f"{opens_at:%H:%M} UTC" in alices
    assert f'data-countdown-to="{int(opens_at.timestamp())}"' in bobs
    # the API's times stay UTC
    api = tokyo.get(f"/api/v1/trades/{trade.pk}/").json()
    assert api["created_at"].endswith("Z") or api["created_at"].endswith("+00:00")
