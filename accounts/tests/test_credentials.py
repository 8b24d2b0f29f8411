"""Credentials after a password change or reset (finding 8): the account token is rotated, other
sessions end, withdrawals wait PASSWORD_CHANGE_WITHDRAW_LOCK_HOURS (by any credential), the
owner is told by email, and the settings page lists sessions with "end all other sessions"."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import services
from accounts.models import Profile, ProfileEvent
from accounts.selectors import profile_for, session_list_for_user
from common.errors import PermissionDenied
from ledger.services import withdrawal_request
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "another-Long-pass-7"
ADDRESS = "0xabcdef0123456789"


def api(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_password(client: Client):
    return client.post(
        reverse("password_change"),
        {
            "old_password": "demo-pass-123",
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )


def test_a_password_change_rotates_the_token_and_ends_other_sessions(alice):
    # given: alice's token, a second browser and the browser she changes the password in
    old_token = Token.objects.create(user=alice).key
    other_browser = logged_in(alice)
    browser = logged_in(alice)

    # when: she changes her password
    response = change_password(browser)

    # then: the old token fails, a new one exists, the other browser is logged out, hers is not
    assert response.status_code == 302
    assert api(old_token).get("/api/v1/wallets/").status_code == 401
    assert Token.objects.get(user=alice).key != old_token
    assert other_browser.get(reverse("settings")).status_code == 302
    assert browser.get(reverse("settings")).status_code == 200
    assert Session.objects.count() == 1
    assert ProfileEvent.objects.filter(
        user=alice, action=ProfileEvent.Action.PASSWORD_CHANGED
    ).exists()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.test"]
    assert "password" in mail.outbox[0].subject.lower()


def test_after_a_password_change_a_withdraw_key_cannot_withdraw(alice):
    # given: a withdraw key and funds
    fund(alice, "ETH", "1")
    _, withdraw_key = services.api_key_create(user=alice, name="payout", scopes=["withdraw"])

    # when: the password is changed, then the key asks for a withdrawal
    change_password(logged_in(alice))
    refused = api(withdraw_key).post(
        "/api/v1/wallets/ETH/withdrawals/",
        {"amount": "0.5", "address": ADDRESS, "password": NEW_PASSWORD},
        format="json",
    )

    # then: refused until the lock ends, and the answer says when
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "withdrawals_locked"
    until = Profile.objects.get(user=alice).withdrawals_locked_until
    hours = settings.PASSWORD_CHANGE_WITHDRAW_LOCK_HOURS
    assert until is not None
    assert until > timezone.now() + timedelta(hours=hours) - timedelta(minutes=5)
    assert until.strftime("%Y-%m-%d %H:%M") in refused.json()["error"]["message"]


def test_withdrawals_open_again_when_the_lock_ends(alice):
    # given: a lock that ended a minute ago
    fund(alice, "ETH", "1")
    profile_for(alice)
    Profile.objects.filter(user=alice).update(
        withdrawals_locked_until=timezone.now() - timedelta(minutes=1)
    )

    # when
    withdrawal = withdrawal_request(user=alice, asset_code="ETH", amount="0.5", address=ADDRESS)

    # then
    assert withdrawal.pk


def test_the_lock_refuses_withdrawals_at_the_service(alice):
    # given: a lock in the future
    fund(alice, "ETH", "1")
    profile_for(alice)
    Profile.objects.filter(user=alice).update(
        withdrawals_locked_until=timezone.now() + timedelta(hours=1)
    )

    # when / then
    with pytest.raises(PermissionDenied) as refused:
        withdrawal_request(user=alice, asset_code="ETH", amount="0.5", address=ADDRESS)
    assert refused.value.code == "withdrawals_locked"


def test_a_password_reset_rotates_the_token_and_ends_every_session(client, alice):
    # given: a token and a logged-in browser
    old_token = Token.objects.create(user=alice).key
    other_browser = logged_in(alice)

    # when: the password is reset by email
    client.post(reverse("password_reset"), {"email": "alice@example.test"})
    link = re.search(r"https?://[^/]+(/accounts/password/reset/\S+/)", mail.outbox[0].body)
    assert link
    form = client.get(link.group(1), follow=True)
    done = client.post(
        form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )

    # then
    assert done.url == reverse("password_reset_complete")
    assert api(old_token).get("/api/v1/wallets/").status_code == 401
    assert other_browser.get(reverse("settings")).status_code == 302
    assert Profile.objects.get(user=alice).withdrawals_locked_until > timezone.now()
    assert len(mail.outbox) == 2  # the reset link, then the notice


def test_sessions_end_others_keeps_the_current_one(alice, bob):
    # given: three sessions of alice's and one of bob's
    current = logged_in(alice)
    logged_in(alice)
    logged_in(alice)
    logged_in(bob)
    keep = current.session.session_key

    # when
    ended = services.sessions_end_others(user=alice, keep_session_key=keep)

    # then
    assert ended == 2
    assert [s.session_key for s in session_list_for_user(user=alice)] == [keep]
    assert len(session_list_for_user(user=bob)) == 1


def test_the_settings_page_lists_sessions_and_ends_the_others(alice):
    # given: alice in two browsers
    browser = logged_in(alice)
    other_browser = logged_in(alice)

    # when: the settings page, then "end all other sessions"
    html = browser.get(reverse("settings")).content.decode()
    response = browser.post(reverse("settings_sessions_end_others"))

    # then
    assert 'id="sessions"' in html
    assert "2 browsers logged in" in html
    assert "This browser" in html
    assert response.status_code == 302
    assert other_browser.get(reverse("settings")).status_code == 302
    assert browser.get(reverse("settings")).status_code == 200
