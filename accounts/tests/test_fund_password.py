"""The fund password (issue 15): releasing, withdrawing and creating API keys ask for the account
password while 2FA is off (the 2FA code once it is on: test_two_factor.py), in the browser and
over the API; a missing or wrong one is refused naming its field and changes nothing; too many
wrong ones lock the check for the cool-off."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client, override_settings
from rest_framework.test import APIClient

from accounts import services
from accounts.models import ApiKey, ProfileEvent
from common.errors import PermissionDenied, RateLimited
from escrow import services as escrow
from escrow.models import Trade
from ledger.models import Withdrawal
from marketplace.tests.factories import fund, make_trade

pytestmark = pytest.mark.django_db

PASSWORD = "demo-pass-123"  # accounts.tests.factories.UserFactory's
ADDRESS = "bc1qdestinationaddress"


@pytest.fixture(autouse=True)
def _fresh_counts():
    """Failure counts live in Redis, which outlives a test's transaction."""
    cache.clear()
    yield
    cache.clear()


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def paid_trade(seller, buyer) -> Trade:
    trade = make_trade(seller, buyer)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=buyer)
    return trade


# --- the check ----------------------------------------------------------------------------------


def test_the_password_is_required_and_checked(alice):
    with pytest.raises(PermissionDenied) as missing:
        services.funds_confirm(user=alice)
    assert missing.value.code == "password_required"
    assert list(missing.value.fields) == ["password"]
    with pytest.raises(PermissionDenied) as wrong:
        services.funds_confirm(user=alice, password="not-it")
    assert wrong.value.code == "password_invalid"
    assert wrong.value.fields == {"password": ["Wrong password."]}
    # a 2FA code is no password: without 2FA, the password it is
    with pytest.raises(PermissionDenied):
        services.funds_confirm(user=alice, otp="123456")
    assert services.funds_confirm(user=alice, password=PASSWORD) == "password"
    assert services.funds_confirm_factor(alice) == "password"


@override_settings(AXES_FAILURE_LIMIT=3, AXES_COOLOFF_TIME=0.5)
def test_wrong_passwords_lock_the_check_and_a_right_one_clears_the_count(alice):
    # given: two wrong answers, then a right one: the count starts again
    for _ in range(2):
        with pytest.raises(PermissionDenied):
            services.funds_confirm(user=alice, password="guess")
    assert services.funds_confirm_failures(user=alice) == 2
    services.funds_confirm(user=alice, password=PASSWORD)
    assert services.funds_confirm_failures(user=alice) == 0

    # when: the limit of wrong answers in a row
    for _ in range(3):
        with pytest.raises(PermissionDenied):
            services.funds_confirm(user=alice, password="guess")

    # then: even the right password is refused for the cool-off, and the profile says why
    with pytest.raises(RateLimited) as locked:
        services.funds_confirm(user=alice, password=PASSWORD)
    assert locked.value.code == "funds_locked"
    assert locked.value.status == 429
    assert locked.value.retry_after == 1800
    event = ProfileEvent.objects.get(user=alice, action=ProfileEvent.Action.FUNDS_LOCKED)
    assert "3 wrong password" in event.detail


# --- release --------------------------------------------------------------------------------


def test_release_over_the_api_asks_for_the_password(alice, bob):
    trade = paid_trade(alice, bob)
    api = api_for(alice)
    url = f"/api/v1/trades/{trade.pk}/release/"

    missing = api.post(url, {}, format="json")
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "password_required"
    assert missing.json()["error"]["fields"] == {
        "password": ["Required: confirm with your account password."]
    }
    wrong = api.post(url, {"password": "nope"}, format="json")
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "password_invalid"
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.PAID
    assert not trade.events.filter(new_state=Trade.State.RELEASING).exists()

    done = api.post(url, {"password": PASSWORD}, format="json")
    assert done.status_code == 200, done.json()
    assert done.json()["state"] == "releasing"


def test_the_trade_room_release_asks_for_the_password(alice, bob):
    trade = paid_trade(alice, bob)
    browser = Client()
    browser.force_login(alice)
    room = browser.get(f"/trades/{trade.pk}/").content.decode()
    assert f'id="password-{trade.pk}"' in room
    assert 'name="password" type="password"' in room

    url = f"/trades/{trade.pk}/release/"
    wrong = browser.post(url, {"expected_state": "paid", "confirm": "1", "password": "nope"})
    assert wrong.status_code == 403
    assert "password: that is not your account password." in wrong.content.decode()
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.PAID

    done = browser.post(url, {"expected_state": "paid", "confirm": "1", "password": PASSWORD})
    assert done.status_code == 302
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.RELEASING


# --- withdrawal ---------------------------------------------------------------------------------


def test_a_withdrawal_asks_for_the_password_in_the_wallet_and_the_api(alice):
    fund(alice, "BTC", "1")
    browser = Client()
    browser.force_login(alice)
    form = {"asset": "BTC", "amount": "0.1", "address": ADDRESS}

    page = browser.get("/wallet/").content.decode()
    assert 'name="password"' in page
    assert 'name="otp"' not in page
    refused = browser.post("/wallet/", {**form, "password": "nope"})
    assert refused.status_code == 403
    assert "Wrong password." in refused.content.decode()
    assert not Withdrawal.objects.exists()
    assert browser.post("/wallet/", {**form, "password": PASSWORD}).status_code == 302
    assert Withdrawal.objects.count() == 1

    api = api_for(alice)
    body = {"amount": "0.1", "address": ADDRESS}
    missing = api.post("/api/v1/wallets/BTC/withdrawals/", body, format="json")
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "password_required"
    assert Withdrawal.objects.count() == 1
    made = api.post(
        "/api/v1/wallets/BTC/withdrawals/", {**body, "password": PASSWORD}, format="json"
    )
    assert made.status_code == 201, made.json()
    assert Withdrawal.objects.count() == 2


# --- API keys ---------------------------------------------------------------------------------


def test_an_api_key_asks_for_the_password_on_the_settings_page_and_the_api(alice):
    browser = Client()
    browser.force_login(alice)
    form = {"name": "grid bot", "scopes": ["read", "trade"]}
    refused = browser.post("/settings/keys/", form)
    assert refused.status_code == 403
    assert "Required: confirm with your account password." in refused.content.decode()
    assert not ApiKey.objects.exists()
    made = browser.post("/settings/keys/", {**form, "password": PASSWORD})
    assert made.status_code == 200
    assert 'id="new-api-key"' in made.content.decode()

    api = api_for(alice)
    body = {"name": "reader", "scopes": ["read"]}
    wrong = api.post("/api/v1/api-keys/", {**body, "password": "nope"}, format="json")
    assert wrong.status_code == 403
    assert wrong.json()["error"]["fields"] == {"password": ["Wrong password."]}
    assert ApiKey.objects.count() == 1
    ok = api.post("/api/v1/api-keys/", {**body, "password": PASSWORD}, format="json")
    assert ok.status_code == 201
    assert ApiKey.objects.count() == 2


def test_the_schema_documents_the_fund_password():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]
    for name in ("ReleaseInputRequest", "WithdrawalCreateInputRequest", "KeyListInputRequest"):
        props = components[name]["properties"]
        assert {"otp", "password"} <= set(props), name
        assert props["password"]["writeOnly"] is True


# --- the memo of a right password (issue 17: Argon2 off the hot path) ----------------------------


def _count_hashing(monkeypatch) -> list[str]:
    """The passwords that reach the hasher (Argon2 in production, MD5 in the test settings)."""
    from django.contrib.auth import base_user

    calls: list[str] = []
    original = base_user.check_password

    def check_password(password, encoded, *args, **kwargs):
        calls.append(password)
        return original(password, encoded, *args, **kwargs)

    monkeypatch.setattr(base_user, "check_password", check_password)
    return calls


@override_settings(FUNDS_PASSWORD_MEMO_SECONDS=300)
def test_a_right_password_is_hashed_once_then_remembered(alice, monkeypatch):
    hashed = _count_hashing(monkeypatch)
    assert services.funds_confirm(user=alice, password=PASSWORD) == "password"
    assert services.funds_confirm(user=alice, password=PASSWORD) == "password"
    assert services.funds_confirm(user=alice, password=PASSWORD) == "password"
    assert hashed == [PASSWORD]
    # the password is still asked for and compared: a wrong or missing one is refused and counted
    with pytest.raises(PermissionDenied) as wrong:
        services.funds_confirm(user=alice, password="not-it")
    assert wrong.value.code == "password_invalid"
    assert hashed == [PASSWORD, "not-it"]
    assert services.funds_confirm_failures(user=alice) == 1
    with pytest.raises(PermissionDenied) as missing:
        services.funds_confirm(user=alice)
    assert missing.value.code == "password_required"
    # a right one (remembered) still clears the count
    services.funds_confirm(user=alice, password=PASSWORD)
    assert services.funds_confirm_failures(user=alice) == 0
    assert hashed == [PASSWORD, "not-it"]
    # the cache holds no password
    redis = cache._cache.get_client()  # Django's RedisCache: the redis-py client
    keys = [key.decode() for key in redis.keys("*funds-password-ok*")]
    assert keys
    assert not any(PASSWORD in key for key in keys)


@override_settings(FUNDS_PASSWORD_MEMO_SECONDS=300)
def test_a_changed_password_is_not_remembered_and_another_user_never_is(alice, bob, monkeypatch):
    services.funds_confirm(user=alice, password=PASSWORD)
    alice.set_password("a-new-pass-456")
    alice.save()
    with pytest.raises(PermissionDenied) as old:
        services.funds_confirm(user=alice, password=PASSWORD)
    assert old.value.code == "password_invalid"
    hashed = _count_hashing(monkeypatch)
    services.funds_confirm(user=alice, password="a-new-pass-456")
    assert hashed == ["a-new-pass-456"]
    # bob's right password is hashed for bob, alice's memo doesn't count for him
    services.funds_confirm(user=bob, password=PASSWORD)
    assert hashed == ["a-new-pass-456", PASSWORD]


@override_settings(FUNDS_PASSWORD_MEMO_SECONDS=0)
def test_no_memo_hashes_every_time(alice, monkeypatch):
    hashed = _count_hashing(monkeypatch)
    services.funds_confirm(user=alice, password=PASSWORD)
    services.funds_confirm(user=alice, password=PASSWORD)
    assert hashed == [PASSWORD, PASSWORD]
