"""Security finding 9: a client's address is REMOTE_ADDR, or what a trusted proxy says it saw.
X-Forwarded-For from anyone else is the client's own claim and changes nothing: not the rate
limits, not the login lockout."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import RequestFactory
from rest_framework.test import APIClient

from common.http import client_ip

PROXY = "10.0.0.5"


def _request(remote: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


# --- common.http.client_ip ------------------------------------------------------------------


def test_forwarded_for_is_ignored_without_trusted_proxies(settings):
    # given no trusted proxy (the default)
    settings.TRUSTED_PROXIES = []
    # when a client claims another address
    ip = client_ip(_request("198.51.100.7", "203.0.113.9"))
    # then its own connection's address counts
    assert ip == "198.51.100.7"


def test_forwarded_for_is_ignored_from_an_untrusted_peer(settings):
    # given a trusted proxy, but the request comes from elsewhere
    settings.TRUSTED_PROXIES = [PROXY]
    # when
    ip = client_ip(_request("198.51.100.7", "203.0.113.9"))
    # then
    assert ip == "198.51.100.7"


@pytest.mark.parametrize(
    ("trusted", "forwarded", "expected"),
    [
        # the proxy appended the address it saw
        ([PROXY], "203.0.113.9", "203.0.113.9"),
        # a client's forged entry on the left is not what the proxy saw
        ([PROXY], "1.2.3.4, 203.0.113.9", "203.0.113.9"),
        # two proxies (a CIDR): walked from the right, skipping each trusted one
        (["10.0.0.0/24"], "1.2.3.4, 203.0.113.9, 10.0.0.7", "203.0.113.9"),
        # IPv6
        ([PROXY], "2001:db8::1", "2001:db8::1"),
        # a trusted proxy that forwarded nothing: the proxy is the client
        ([PROXY], "", PROXY),
        # garbage where the proxy's entry should be: no address from the header at all
        ([PROXY], "1.2.3.4, not-an-ip", PROXY),
    ],
)
def test_forwarded_for_from_a_trusted_proxy(settings, trusted, forwarded, expected):
    # given
    settings.TRUSTED_PROXIES = trusted
    # when
    ip = client_ip(_request(PROXY, forwarded))
    # then
    assert ip == expected


# --- the throttles ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_auth_throttle_ignores_a_forged_forwarded_for(settings, alice):
    # given the real limit on token requests and a client that is no trusted proxy
    settings.API_RATE_LIMITS = {**settings.API_RATE_LIMITS, "auth": "30/min"}
    settings.TRUSTED_PROXIES = []
    cache.delete("throttle_auth_198.51.100.23")
    api = APIClient(REMOTE_ADDR="198.51.100.23")
    # when it asks 35 times, claiming a new address each time
    codes = [
        api.post(
            "/api/v1/auth/token/",
            {"username": "alice", "password": "demo-pass-123"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n}",
        ).status_code
        for n in range(35)
    ]
    # then the 31st is refused: one address, one budget
    assert codes[:30] == [200] * 30
    assert codes[30:] == [429] * 5


@pytest.mark.django_db
def test_auth_throttle_counts_clients_behind_a_trusted_proxy_apart(settings, alice):
    # given a trusted proxy in front of two clients, one of which used up its budget
    settings.API_RATE_LIMITS = {**settings.API_RATE_LIMITS, "auth": "3/min"}
    settings.TRUSTED_PROXIES = [PROXY]
    for ip in ("203.0.113.41", "203.0.113.42", PROXY):
        cache.delete(f"throttle_auth_{ip}")
    api = APIClient(REMOTE_ADDR=PROXY)
    body = {"username": "alice", "password": "demo-pass-123"}
    for _ in range(3):
        api.post("/api/v1/auth/token/", body, format="json", HTTP_X_FORWARDED_FOR="203.0.113.41")
    # when each asks once more
    first = api.post(
        "/api/v1/auth/token/", body, format="json", HTTP_X_FORWARDED_FOR="203.0.113.41"
    )
    other = api.post(
        "/api/v1/auth/token/", body, format="json", HTTP_X_FORWARDED_FOR="203.0.113.42"
    )
    # then only the first is throttled
    assert first.status_code == 429
    assert other.status_code == 200


# --- the login lockout (django-axes) ----------------------------------------------------------


def _bad_logins(api: APIClient, count: int, **extra: str) -> None:
    for _ in range(count):
        api.post(
            "/api/v1/auth/token/",
            {"username": "alice", "password": "wrong"},
            format="json",
            **extra,
        )


@pytest.mark.django_db
def test_a_stranger_cannot_lock_an_account_from_another_address(settings, alice):
    # given five bad passwords for alice from address A
    settings.TRUSTED_PROXIES = []
    _bad_logins(APIClient(REMOTE_ADDR="198.51.100.66"), settings.AXES_FAILURE_LIMIT)
    # when alice logs in from address B
    response = APIClient(REMOTE_ADDR="198.51.100.77").post(
        "/api/v1/auth/token/", {"username": "alice", "password": "demo-pass-123"}, format="json"
    )
    # then she gets in, while A stays locked out
    assert response.status_code == 200
    locked = APIClient(REMOTE_ADDR="198.51.100.66").post(
        "/api/v1/auth/token/", {"username": "alice", "password": "demo-pass-123"}, format="json"
    )
    assert locked.status_code == 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_a_stranger_cannot_lock_an_account(settings, alice):
    # given the TLS proxy production expects, and five bad passwords for alice through it from A
    settings.TRUSTED_PROXIES = [PROXY]
    api = APIClient(REMOTE_ADDR=PROXY)
    _bad_logins(api, settings.AXES_FAILURE_LIMIT, HTTP_X_FORWARDED_FOR="203.0.113.66")
    # when alice logs in through the same proxy from B
    response = api.post(
        "/api/v1/auth/token/",
        {"username": "alice", "password": "demo-pass-123"},
        format="json",
        HTTP_X_FORWARDED_FOR="203.0.113.77",
    )
    # then she gets in: the lockout is per username and client address, not the proxy's
    assert response.status_code == 200
    locked = api.post(
        "/api/v1/auth/token/",
        {"username": "alice", "password": "demo-pass-123"},
        format="json",
        HTTP_X_FORWARDED_FOR="203.0.113.66",
    )
    assert locked.status_code == 429


@pytest.mark.django_db
def test_a_forged_forwarded_for_does_not_escape_the_lockout(settings, alice):
    # given five bad passwords from one address that is no trusted proxy
    settings.TRUSTED_PROXIES = []
    api = APIClient(REMOTE_ADDR="198.51.100.88")
    _bad_logins(api, settings.AXES_FAILURE_LIMIT, HTTP_X_FORWARDED_FOR="203.0.113.1")
    # when it tries again claiming another address
    response = api.post(
        "/api/v1/auth/token/",
        {"username": "alice", "password": "demo-pass-123"},
        format="json",
        HTTP_X_FORWARDED_FOR="203.0.113.2",
    )
    # then it is still locked out
    assert response.status_code == 429
