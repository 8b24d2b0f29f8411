"""Sign-up, login, logout, passwords and the public profile."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from escrow import services as escrow
from escrow.models import Settlement
from marketplace.tests.factories import make_offer, make_trade

pytestmark = pytest.mark.django_db

User = get_user_model()


def _signup(client, **overrides: str):
    data = {
        "username": "dave",
        "email": "dave@example.test",
        "password1": "a-long-Pass-phrase-9",
        "password2": "a-long-Pass-phrase-9",
    }
    data.update(overrides)
    return client.post(reverse("signup"), data)


class TestSignup:
    def test_signup_creates_the_account_and_logs_in(self, client, refdata):
        assert client.get(reverse("signup")).status_code == 200
        response = _signup(client)
        assert response.status_code == 302
        assert response.url == reverse("home")
        user = User.objects.get(username="dave")
        assert user.email == "dave@example.test"
        assert client.session["_auth_user_id"] == str(user.pk)
        assert "dave" in client.get(reverse("home")).content.decode()

    def test_signup_goes_back_to_next(self, client, refdata):
        response = client.post(
            reverse("signup") + "?next=/wallet/",
            {
                "username": "dave",
                "email": "dave@example.test",
                "password1": "a-long-Pass-phrase-9",
                "password2": "a-long-Pass-phrase-9",
                "next": "/wallet/",
            },
        )
        assert response.url == "/wallet/"

    def test_signup_ignores_an_offsite_next(self, client, refdata):
        response = _signup(client, next="https://evil.example/")
        assert response.url == reverse("home")

    def test_signup_errors_keep_the_input(self, client, alice):
        response = _signup(client, username="alice", email="not-an-email", password2="other")
        html = response.content.decode()
        assert response.status_code == 400
        assert "A user with that username already exists." in html
        assert "Enter a valid email address." in html
        assert 'value="not-an-email"' in html
        assert not User.objects.filter(email="not-an-email").exists()

    def test_email_is_required_and_unique(self, client, alice):
        assert _signup(client, email="").status_code == 400
        response = _signup(client, email="ALICE@example.test")
        assert "An account with this email already exists." in response.content.decode()


class TestLoginLogout:
    def test_login_page_and_login(self, client, alice):
        html = client.get(reverse("login")).content.decode()
        assert 'name="username"' in html
        assert reverse("password_reset") in html
        assert reverse("signup") in html
        response = client.post(
            reverse("login"), {"username": "alice", "password": "demo-pass-123", "next": "/wallet/"}
        )
        assert response.status_code == 302
        assert response.url == "/wallet/"

    def test_wrong_password_says_so(self, client, alice):
        response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
        assert response.status_code == 200
        assert "Please enter a correct username and password." in response.content.decode()

    def test_logout_is_a_post_form(self, client, alice):
        client.force_login(alice)
        html = client.get(reverse("home")).content.decode()
        assert f'<form method="post" action="{reverse("logout")}">' in html
        response = client.post(reverse("logout"))
        assert response.status_code == 302
        assert "_auth_user_id" not in client.session


class TestPasswords:
    def test_change_password(self, client, alice):
        client.force_login(alice)
        assert client.get(reverse("password_change")).status_code == 200
        response = client.post(
            reverse("password_change"),
            {
                "old_password": "demo-pass-123",
                "new_password1": "another-Long-pass-7",
                "new_password2": "another-Long-pass-7",
            },
        )
        assert response.status_code == 302
        assert response.url == reverse("password_change_done")
        alice.refresh_from_db()
        assert alice.check_password("another-Long-pass-7")

    def test_reset_password_by_email(self, client, alice):
        assert client.get(reverse("password_reset")).status_code == 200
        response = client.post(reverse("password_reset"), {"email": "alice@example.test"})
        assert response.url == reverse("password_reset_done")
        assert len(mail.outbox) == 1
        link = re.search(r"https?://[^/]+(/accounts/password/reset/\S+/)", mail.outbox[0].body)
        assert link
        # the link leads to the "choose a new password" form
        response = client.get(link.group(1), follow=True)
        assert "Choose a new password" in response.content.decode()
        response = client.post(
            response.redirect_chain[-1][0],
            {"new_password1": "brand-New-pass-42", "new_password2": "brand-New-pass-42"},
        )
        assert response.url == reverse("password_reset_complete")
        alice.refresh_from_db()
        assert alice.check_password("brand-New-pass-42")


class TestProfile:
    def test_profile_shows_record_and_open_offers(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        escrow.escrow_release(trade_id=trade.pk, actor=alice)
        escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
        make_offer(bob, side="buy", price="79000")
        html = client.get(reverse("profile", args=["alice"])).content.decode()
        assert "Member since" in html
        assert alice.date_joined.strftime("%B %Y") in html
        assert '<span class="stat-value">1</span>' in html
        assert '<span class="stat-value">100%</span>' in html
        assert "80,000.00" in html  # alice's open sell offer
        assert "79,000.00" not in html  # bob's offer is on bob's page

    def test_unknown_user_is_404(self, client, refdata):
        assert client.get(reverse("profile", args=["nobody"])).status_code == 404
