"""Optional TOTP 2FA (django-otp): once on, its code is the fund password that releasing,
withdrawing and creating API keys ask for, over the API and the browser forms; a wrong code at
setup keeps the secret the app scanned."""

from __future__ import annotations

import base64
import time

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import services
from common.errors import ValidationFailed
from escrow import services as escrow
from escrow.models import Trade
from marketplace.tests.factories import fund, make_trade

pytestmark = pytest.mark.django_db


def code(device: TOTPDevice, *, offset: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + offset * device.step
    return f"{totp.token():0{device.digits}d}"


def enable(user) -> TOTPDevice:
    device, url = services.totp_setup_start(user=user)
    assert url.startswith("otpauth://totp/")
    with pytest.raises(ValidationFailed):
        services.totp_setup_confirm(
            user=user, token="000000" if code(device) != "000000" else "111111"
        )
    # a wrong code throttles the device for a moment (brute force); the test needn't wait
    TOTPDevice.objects.get(pk=device.pk).throttle_reset()
    return services.totp_setup_confirm(user=user, token=code(device))


def test_release_needs_a_code_once_2fa_is_on(alice, bob):
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    device = enable(alice)
    api = APIClient()
    api.force_authenticate(alice)
    url = f"/api/v1/trades/{trade.pk}/release/"
    missing = api.post(url, {"password": "demo-pass-123"}, format="json")  # the code, not this
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "otp_required"
    assert missing.json()["error"]["fields"] == {
        "otp": ["Required: two-factor authentication is on."]
    }
    wrong = api.post(url, {"otp": "12345"}, format="json")
    assert wrong.json()["error"]["code"] == "otp_invalid"
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.PAID
    TOTPDevice.objects.get(pk=device.pk).throttle_reset()
    done = api.post(url, {"otp": code(device, offset=1)}, format="json")
    assert done.status_code == 200, done.json()
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.RELEASING


def test_withdrawal_and_withdraw_keys_over_the_api(alice):
    fund(alice, "BTC", "1")
    device = enable(alice)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    body = {"amount": "0.1", "address": "bc1qdestination"}
    refused = api.post("/api/v1/wallets/BTC/withdrawals/", body, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "otp_required"
    ok = api.post(
        "/api/v1/wallets/BTC/withdrawals/", body, format="json", HTTP_X_OTP=code(device, offset=1)
    )
    assert ok.status_code == 201, ok.json()
    key = {"name": "payout bot", "scopes": ["read", "withdraw"]}
    assert api.post("/api/v1/api-keys/", key, format="json").status_code == 403
    made = api.post("/api/v1/api-keys/", {**key, "otp": code(device, offset=2)}, format="json")
    assert made.status_code == 201, made.json()
    # every key asks, a read-only one too (it reads balances and trades)
    reader = api.post("/api/v1/api-keys/", {"name": "reader", "scopes": ["read"]}, format="json")
    assert reader.status_code == 403
    assert reader.json()["error"]["code"] == "otp_required"


def test_browser_release_form_asks_for_the_code(client, alice, bob):
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    device = enable(alice)
    client.force_login(alice)
    page = client.get(f"/trades/{trade.pk}/release/")
    assert 'name="otp"' in page.content.decode()
    url = f"/trades/{trade.pk}/release/"
    refused = client.post(url, {"expected_state": "paid", "confirm": "1"})
    assert refused.status_code == 403
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.PAID
    done = client.post(
        url, {"expected_state": "paid", "confirm": "1", "otp": code(device, offset=1)}
    )
    assert done.status_code == 302
    assert Trade.objects.get(pk=trade.pk).state == Trade.State.RELEASING


def test_settings_page_turns_2fa_on_and_off(client, alice):
    client.force_login(alice)
    assert "Turn on 2FA" in client.get("/settings/").content.decode()
    setup = client.post("/settings/2fa/start/")
    assert setup.status_code == 200
    assert "<svg" in setup.content.decode()
    device = TOTPDevice.objects.get(user=alice)
    client.post("/settings/2fa/confirm/", {"otp": code(device)})
    assert services.has_two_factor(alice)
    client.post("/settings/2fa/disable/", {"otp": code(device, offset=1)})
    assert not services.has_two_factor(alice)


def test_a_wrong_code_at_setup_keeps_the_scanned_secret(client, alice):
    # given: alice started the setup and scanned the QR code
    client.force_login(alice)
    first = client.post("/settings/2fa/start/")
    assert first.status_code == 200
    device = TOTPDevice.objects.get(user=alice, confirmed=False)
    scanned = device.key
    # when: she types a wrong code
    wrong = "000000" if code(device) != "000000" else "111111"
    refused = client.post("/settings/2fa/confirm/", {"otp": wrong})
    # then: the page asks again with the same secret, and nothing was turned on
    assert refused.status_code == 400
    page = refused.content.decode()
    assert "that code is not right" in page
    assert base64.b32encode(bytes.fromhex(scanned)).decode().rstrip("=") in page
    assert TOTPDevice.objects.get(user=alice).key == scanned
    assert not services.has_two_factor(alice)
    # pressing "Turn on 2FA" again from the settings page shows the same secret too
    client.post("/settings/2fa/start/")
    assert TOTPDevice.objects.get(user=alice).key == scanned
    # and the code of the app that scanned it turns 2FA on
    TOTPDevice.objects.get(user=alice).throttle_reset()
    client.post("/settings/2fa/confirm/", {"otp": code(TOTPDevice.objects.get(user=alice))})
    assert services.has_two_factor(alice)


def test_a_new_secret_only_when_asked(alice):
    device, _ = services.totp_setup_start(user=alice)
    again, _ = services.totp_setup_start(user=alice)
    assert again.pk == device.pk
    assert again.key == device.key
    fresh, _ = services.totp_setup_start(user=alice, new_secret=True)
    assert fresh.key != device.key
    assert list(TOTPDevice.objects.filter(user=alice).values_list("pk", flat=True)) == [fresh.pk]
