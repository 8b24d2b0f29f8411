"""Per-person preferences decide which news goes by email and Telegram: the defaults, the API
(GET/PUT /api/v1/notifications/preferences/), the settings page's section, and what the
outbox writes because of them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.services import api_key_create
from escrow import services as escrow
from marketplace.tests.factories import make_trade
from notifications import preferences
from notifications.models import NotificationPreference, OutboundMessage
from notifications.tests.test_api import client_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trade_news_inline")]

URL = "/api/v1/notifications/preferences/"


def _by_category(body: dict) -> dict[str, tuple[bool, bool]]:
    return {p["category"]: (p["email"], p["telegram"]) for p in body["preferences"]}


def test_defaults_email_what_asks_to_act_and_keep_chat_in_the_bell(alice):
    # when alice, who never chose, reads her preferences
    answer = client_for(alice).get(URL)
    # then every category is there with its default, and Telegram is not linked (nor set up)
    assert answer.status_code == 200
    got = _by_category(answer.json())
    assert got == {c: preferences.DEFAULTS[c] for c in NotificationPreference.Category.values}
    assert got["trade_paid"] == (True, True)
    assert got["chat"] == (False, False)
    assert answer.json()["telegram"] == {"enabled": False, "bot_name": "", "linked": False}


def test_put_sets_the_categories_given_and_keeps_the_others(alice):
    api = client_for(alice)
    # when alice wants chat by Telegram and no email about paid trades
    answer = api.put(
        URL,
        {
            "preferences": [
                {"category": "chat", "telegram": True},
                {"category": "trade_paid", "email": False},
            ]
        },
        format="json",
    )
    # then those changed, the channel left out of each kept its value, the rest are defaults
    assert answer.status_code == 200, answer.json()
    got = _by_category(answer.json())
    assert got["chat"] == (False, True)
    assert got["trade_paid"] == (False, True)
    assert got["disputes"] == preferences.DEFAULTS["disputes"]
    # and sending the same again changes nothing (idempotent)
    again = api.put(URL, {"preferences": [{"category": "chat", "telegram": True}]}, format="json")
    assert _by_category(again.json()) == got
    assert NotificationPreference.objects.filter(user=alice).count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preferences": [{"category": "weather"}]}, "preferences"),
        ({"preferences": [{"category": "chat", "email": "maybe"}]}, "preferences"),
        ({}, "preferences"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(alice, body, field):
    answer = client_for(alice).put(URL, body, format="json")
    assert answer.status_code == 400
    assert field in answer.json()["error"]["fields"]
    assert not NotificationPreference.objects.exists()


def test_a_category_given_twice_changes_nothing(alice):
    answer = client_for(alice).put(
        URL,
        {
            "preferences": [
                {"category": "chat", "email": True},
                {"category": "chat", "email": False},
            ]
        },
        format="json",
    )
    assert answer.status_code == 400
    assert "preferences[1].category" in answer.json()["error"]["fields"]
    assert not NotificationPreference.objects.exists()


def test_an_api_key_reads_but_cannot_silence_the_alerts(alice):
    _, raw = api_key_create(user=alice, name="bot", scopes=["read", "trade"])
    api = client_for(key=raw)
    assert api.get(URL).status_code == 200
    denied = api.put(
        URL, {"preferences": [{"category": "trade_paid", "email": False}]}, format="json"
    )
    assert denied.status_code == 403
    assert not NotificationPreference.objects.exists()


def test_unauthenticated_is_refused():
    assert client_for().get(URL).status_code == 401


def test_the_settings_page_saves_the_ticked_boxes(client, alice):
    # given alice's settings page: a Notifications section with every category, ticked by default
    client.force_login(alice)
    page = client.get(reverse("settings")).content.decode()
    assert 'id="notifications"' in page
    assert (
        'id="pref-email-trade_paid" aria-label="The buyer marked a trade paid by email" checked'
        in page
    )
    section = page.split('id="notifications"')[1].split("</section>")[0]
    assert '<th scope="col">Telegram</th>' not in section  # no column without a bot
    # when she unticks everything but disputes and saves
    saved = client.post(reverse("notification_preferences"), {"email": ["disputes"]})
    # then she is back on the section, and only disputes come by email
    assert saved.status_code == 302
    assert saved.url.endswith("/settings/#notifications")
    got = {p["category"]: p["email"] for p in preferences.preferences_for_user(user=alice)}
    assert [c for c, on in got.items() if on] == ["disputes"]
    # and Telegram choices (no column shown) kept their defaults
    tg = {p["category"]: p["telegram"] for p in preferences.preferences_for_user(user=alice)}
    assert tg == {c: d[1] for c, d in preferences.DEFAULTS.items()}


def test_preferences_decide_which_emails_are_queued(
    alice, bob, django_capture_on_commit_callbacks, mailoutbox, outbound_inline
):
    # given alice wants no email when a buyer marks paid
    preferences.preferences_set(user=alice, changes=[{"category": "trade_paid", "email": False}])
    # when bob opens a trade on her offer and marks it paid
    with django_capture_on_commit_callbacks(execute=True):
        trade = make_trade(alice, bob)
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    # then she got the "opened" email only; the bell has both
    assert [m.subject for m in mailoutbox] == [f"Trade #{trade.pk}: created"]
    assert list(OutboundMessage.objects.values_list("category", "status")) == [
        ("trade_opened", "sent")
    ]
    assert alice.notifications.count() == 2
    # and the email is written to her, with where to change this
    body = mailoutbox[0].body
    assert body.startswith("Hello alice,\n\nbob opened trade #")
    assert "/settings/#notifications" in body
