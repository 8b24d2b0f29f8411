"""Security finding 5 (sock puppets): accounts that share a signup or login address or a device
cookie are linked. Linked accounts can't trade with each other, and what they do for each other
(trades, feedback) counts toward nobody's reputation or offer requirements; moderators see the
links."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts import selectors, services
from accounts.models import AccountLink
from accounts.tests.factories import UserFactory, complete
from escrow.models import Feedback, Trade
from escrow.selectors import feedback_summary, trader_stats, trader_stats_for_users
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db

HOME = "198.51.100.10"


def _login(client: Client, user, **extra) -> None:
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": "demo-pass-123"}, **extra
    )
    assert response.status_code == 302, response.content


# --- recording --------------------------------------------------------------------------------


def test_login_records_a_hashed_address_and_sets_a_device_cookie(alice):
    # given a browser on its first visit
    client = Client(REMOTE_ADDR=HOME)
    page = client.get("/accounts/login/")
    cookie = page.cookies["did"]
    # when alice logs in
    _login(client, alice)
    # then both her address and the device are recorded, neither in the clear
    rows = AccountLink.objects.filter(user=alice)
    assert sorted(rows.values_list("kind", flat=True)) == ["device", "ip"]
    assert all(len(r.value_hash) == 64 for r in rows)
    assert not rows.filter(value_hash__in=[HOME, cookie.value]).exists()
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["max-age"] >= 365 * 24 * 3600


def test_two_accounts_on_one_device_are_linked(alice, bob):
    # given one browser, alice logs in from home and bob from another address
    client = Client(REMOTE_ADDR=HOME)
    _login(client, alice)
    client.post("/accounts/logout/")  # (the test client's logout() would drop the cookies)
    # when bob logs in on the same device
    _login(client, bob, REMOTE_ADDR="203.0.113.50")
    # then they are linked, both ways
    assert selectors.linked_user_ids(user=alice) == {bob.pk}
    assert selectors.linked_user_ids(user=bob) == {alice.pk}
    assert selectors.accounts_linked(user_id=alice.pk, other_id=bob.pk)


def test_signup_links_to_the_account_that_used_the_address(alice):
    # given alice logged in from home (another browser)
    _login(Client(REMOTE_ADDR=HOME), alice)
    # when someone signs up from the same address
    response = Client(REMOTE_ADDR=HOME).post(
        "/accounts/signup/",
        {
            "username": "puppet",
            "email": "puppet@example.test",
            "password1": "a-long-puppet-pass-9",
            "password2": "a-long-puppet-pass-9",
        },
    )
    assert response.status_code == 302, response.content
    # then the new account is linked to alice
    puppet = alice.__class__.objects.get(username="puppet")
    assert selectors.linked_user_ids(user=puppet) == {alice.pk}


def test_api_token_login_records_the_address(alice, bob):
    # given bob logged in from home
    services.account_links_record(user=bob, ip=HOME, device=None)
    # when alice asks for a token from the same address
    response = APIClient(REMOTE_ADDR=HOME).post(
        "/api/v1/auth/token/", {"username": "alice", "password": "demo-pass-123"}, format="json"
    )
    # then
    assert response.status_code == 200
    assert selectors.accounts_linked(user_id=alice.pk, other_id=bob.pk)


def test_a_crowded_address_links_nobody(settings, alice, bob, carol):
    # given an address four accounts use (a carrier's NAT), over the default limit of three
    settings.LINK_IP_MAX_USERS = 3
    dave = UserFactory(username="dave")
    for user in (alice, bob, carol, dave):
        services.account_links_record(user=user, ip="100.64.0.1", device=None)
    # then it links no one
    assert selectors.linked_user_ids(user=alice) == set()
    assert not selectors.accounts_linked(user_id=alice.pk, other_id=bob.pk)
    # while three on one address are linked
    settings.LINK_IP_MAX_USERS = 4
    assert selectors.linked_user_ids(user=alice) == {bob.pk, carol.pk, dave.pk}


def test_loopback_and_missing_addresses_are_not_recorded(alice):
    # given the machine itself (a health check, a test) and no address at all
    services.account_links_record(user=alice, ip="127.0.0.1", device=None)
    services.account_links_record(user=alice, ip="", device="")
    # then nothing links on them
    assert not AccountLink.objects.filter(user=alice).exists()


def test_a_repeated_login_updates_last_seen_only(alice):
    # given
    services.account_links_record(user=alice, ip=HOME, device="d" * 43)
    first = {r.kind: r.last_seen for r in AccountLink.objects.filter(user=alice)}
    # when
    services.account_links_record(user=alice, ip=HOME, device="d" * 43)
    # then one row per value, seen again
    rows = AccountLink.objects.filter(user=alice)
    assert rows.count() == 2
    assert all(r.last_seen > first[r.kind] and r.first_seen < r.last_seen for r in rows)


# --- using the links ------------------------------------------------------------------------


def test_linked_accounts_cannot_trade_with_each_other(alice, bob):
    # given alice's offer and bob, who shares her device
    services.account_links_record(user=alice, ip=None, device="shared-device-cookie-value-0001")
    services.account_links_record(user=bob, ip=None, device="shared-device-cookie-value-0001")
    fund(alice, "BTC", "1")
    offer = make_offer(alice)
    api = APIClient()
    api.force_authenticate(bob)
    # when bob takes it
    response = api.post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, format="json")
    # then he is refused, without being told what linked them
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "linked_accounts"
    assert "device" not in error["message"].lower()
    assert "address" not in error["message"].lower()
    assert not Trade.objects.exists()


def test_trades_and_feedback_between_linked_accounts_do_not_count(
    alice, bob, carol, django_assert_num_queries
):
    # given alice completed a trade with bob and one with carol, each rated her positively
    for buyer in (bob, carol):
        trade = make_trade(alice, buyer)
        complete(trade)
        Feedback.objects.create(trade=trade, author=buyer, target=alice, rating="positive")
    assert trader_stats(user=alice).trades == 2
    # when bob turns out to share alice's address
    services.account_links_record(user=alice, ip=HOME, device=None)
    services.account_links_record(user=bob, ip=HOME, device=None)
    # then only carol's trade and feedback count, for alice and for bob
    assert trader_stats(user=alice).trades == 1
    assert trader_stats(user=bob).trades == 0
    assert trader_stats(user=carol).trades == 1
    assert feedback_summary(user=alice) == {"positive": 1, "negative": 0}
    # and still one query for the counts (one for release times, one for the names), however
    # many traders are shown
    with django_assert_num_queries(3):
        stats = trader_stats_for_users(user_ids=[alice.pk, bob.pk, carol.pk])
    assert stats[alice.pk].completion_rate == 100


def test_moderators_see_the_links_on_the_profile(admin_client, alice, bob):
    # given alice and bob share a device
    services.account_links_record(user=alice, ip=None, device="shared-device-cookie-value-0002")
    services.account_links_record(user=bob, ip=None, device="shared-device-cookie-value-0002")
    profile = selectors.profile_for(alice)
    # when a moderator opens alice's profile
    page = admin_client.get(f"/admin/accounts/profile/{profile.pk}/change/")
    # then bob is listed with the kind of link
    assert page.status_code == 200
    html = page.content.decode()
    assert "bob" in html
    assert "device" in html


@pytest.mark.django_db
def test_sign_ups_are_throttled_per_address(client, settings, refdata):
    # given a limit of 3 sign-ups an hour per address (security finding 6: ten accounts in 1.2 s)
    from django.core.cache import cache

    settings.SIGNUP_PER_ADDRESS_PER_HOUR = 3
    cache.clear()
    codes = []
    # when one address signs up five accounts
    for n in range(5):
        response = client.post(
            "/accounts/signup/",
            {
                "username": f"puppet{n}",
                "email": f"puppet{n}@example.test",
                "password1": "a-long-puppet-pass-9",
                "password2": "a-long-puppet-pass-9",
            },
            REMOTE_ADDR="198.51.100.7",
        )
        codes.append(response.status_code)
        client.logout()
    # then three are created and the rest are told to wait
    assert codes[:3] == [302, 302, 302]
    assert codes[3:] == [429, 429]
    assert "Too many new accounts" in response.content.decode()


def test_the_take_s_statement_answers_as_the_orm_rule(settings, alice, bob, carol):
    # accounts_linked runs one plain statement (every take asks it); accounts_linked_sql, which
    # the figures use, is the ORM's expression of the same rule: both answer alike for every pair
    settings.LINK_IP_MAX_USERS = 3
    dave, erin = UserFactory(username="dave"), UserFactory(username="erin")
    for user in (alice, bob, carol, dave):  # a crowded address: links nobody
        services.account_links_record(user=user, ip="100.64.0.1", device=None)
    services.account_links_record(user=alice, ip="198.51.100.7", device=None)  # a quiet one
    services.account_links_record(user=erin, ip="198.51.100.7", device=None)
    services.account_links_record(user=carol, ip=None, device="d" * 32)  # a shared device
    services.account_links_record(user=dave, ip=None, device="d" * 32)
    people = [alice, bob, carol, dave, erin]
    answers = {
        (a.username, b.username): selectors.accounts_linked(user_id=a.pk, other_id=b.pk)
        for a in people
        for b in people
    }
    assert answers == {
        (a.username, b.username): selectors.accounts_linked_orm(user_id=a.pk, other_id=b.pk)
        for a in people
        for b in people
    }
    linked = {pair for pair, yes in answers.items() if yes}
    assert linked == {("alice", "erin"), ("erin", "alice"), ("carol", "dave"), ("dave", "carol")}
    # past the limit nobody is linked by the crowded address; within it, everybody on it is
    settings.LINK_IP_MAX_USERS = 4
    assert selectors.accounts_linked(user_id=alice.pk, other_id=bob.pk)
    assert selectors.accounts_linked_orm(user_id=alice.pk, other_id=bob.pk)
