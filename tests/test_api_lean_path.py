"""The lean API path (issue 17): cached credential look-ups revoked at once, both throttles in
one Redis script, last seen written at most once a minute, middleware the API skips."""

from __future__ import annotations

import contextlib

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import middleware as accounts_middleware
from accounts.models import Profile
from accounts.services import api_key_create, auth_cache_key, token_rotate
from common import hotcache

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    hotcache.reset()
    accounts_middleware._checked.clear()
    yield
    cache.clear()


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _auth_queries(ctx: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in ctx.captured_queries
        if "authtoken_token" in q["sql"] or "apikey" in q["sql"]
    ]


def test_a_token_is_looked_up_once_then_read_from_the_cache(bob):
    # given a token used once
    key = Token.objects.get_or_create(user=bob)[0].key
    api = client_for(key)
    assert api.get("/api/v1/wallets/").status_code == 200
    # when it is used again
    with CaptureQueriesContext(connection) as ctx:
        again = api.get("/api/v1/wallets/")
    # then no query looks it up: the cache answered, under the key's hash, not the key
    assert again.status_code == 200
    assert _auth_queries(ctx) == []
    assert cache.get(auth_cache_key(key)) is not None
    assert not any(key in str(k) for k in cache._cache.get_client().keys("*"))


def test_a_revoked_api_key_is_refused_on_the_very_next_request(bob):
    # given a key whose look-up is cached
    key, raw = api_key_create(user=bob, name="bot", scopes=["read"])
    api = client_for(raw)
    assert api.get("/api/v1/wallets/").status_code == 200
    assert cache.get(auth_cache_key(raw)) is not None
    # when its owner revokes it
    token = Token.objects.get_or_create(user=bob)[0].key
    assert client_for(token).delete(f"/api/v1/api-keys/{key.pk}/").status_code == 204
    # then the next request with it is refused
    refused = api.get("/api/v1/wallets/")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]


def test_a_rotated_token_is_refused_on_the_very_next_request(bob):
    old = Token.objects.get_or_create(user=bob)[0].key
    assert client_for(old).get("/api/v1/wallets/").status_code == 200
    new = token_rotate(user=bob).key
    assert client_for(old).get("/api/v1/wallets/").status_code == 401
    assert client_for(new).get("/api/v1/wallets/").status_code == 200


def test_a_deactivated_user_is_refused_on_the_very_next_request(bob):
    # given a token and an API key, both cached
    token = Token.objects.get_or_create(user=bob)[0].key
    _, raw = api_key_create(user=bob, name="bot", scopes=["read"])
    for key in (token, raw):
        assert client_for(key).get("/api/v1/wallets/").status_code == 200
    # when a moderator deactivates the account (a plain save, as the admin does)
    bob.is_active = False
    bob.save()
    # then neither works any more
    for key in (token, raw):
        assert client_for(key).get("/api/v1/wallets/").status_code == 401


def test_both_throttles_are_kept_by_one_script_and_the_tightest_is_reported(bob, settings):
    settings.API_RATE_LIMITS = {**settings.API_RATE_LIMITS, "key": "5/min", "ip": "3/min"}
    api = client_for(Token.objects.get_or_create(user=bob)[0].key)
    responses = [api.get("/api/v1/wallets/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r["X-RateLimit-Limit"] for r in responses[:3]] == ["3", "3", "3"]
    assert [r["X-RateLimit-Remaining"] for r in responses[:3]] == ["2", "1", "0"]
    assert int(responses[3]["Retry-After"]) > 0
    # each limit is a sorted set of the requests it let through (the refused one not counted)
    client = cache._cache.get_client()
    keys = [k.decode() for k in client.keys("*throttle_*")]
    assert sorted(k.rsplit("throttle_", 1)[1].split("_")[0] for k in keys) == ["ip", "key"]
    assert [(client.type(k), client.zcard(k)) for k in keys] == [(b"zset", 3)] * 2


def test_throttles_fail_open_while_the_cache_is_unreachable(bob, settings):
    # given a Redis nobody listens on (the real one stopped: tests/faults does that too)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    from django.core.cache import caches

    caches._settings = caches.settings = settings.CACHES  # type: ignore[attr-defined]
    with contextlib.suppress(AttributeError):
        del caches._connections.default
    token = Token.objects.get_or_create(user=bob)[0].key
    # when the API is called
    answers = [client_for(token).get("/api/v1/wallets/").status_code for _ in range(3)]
    # then it answers (credentials from the database, no rate limit), the breaker open
    assert answers == [200, 200, 200]
    assert not hotcache.available()


def test_last_seen_is_written_at_most_once_a_minute(bob):
    Profile.objects.get_or_create(user=bob)
    api = client_for(Token.objects.get_or_create(user=bob)[0].key)
    # the first request writes it
    api.get("/api/v1/wallets/")
    first = Profile.objects.get(user=bob).last_seen
    assert first is not None
    # the next ones within the minute write nothing, whatever this process remembers
    Profile.objects.filter(user=bob).update(last_seen=None)
    accounts_middleware._checked.clear()  # another process: the cache key still guards it
    with CaptureQueriesContext(connection) as ctx:
        api.get("/api/v1/wallets/")
        api.get("/api/v1/wallets/")
    assert not [q for q in ctx.captured_queries if "UPDATE" in q["sql"] and "profile" in q["sql"]]
    assert Profile.objects.get(user=bob).last_seen is None
    # once the minute is over (its cache key expired), the next request writes it again
    cache.delete(f"last-seen:{bob.pk}")
    accounts_middleware._checked.clear()
    api.get("/api/v1/wallets/")
    assert Profile.objects.get(user=bob).last_seen is not None


def test_the_api_skips_the_page_middleware_but_keeps_csrf_for_sessions(bob):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(bob)
    # pages still get the device cookie and the Content-Security-Policy
    page = browser.get("/")
    assert "did" in page.cookies
    assert "Content-Security-Policy" in page
    # the API does not (JSON, and bots keep no cookie)
    api = client_for(Token.objects.get_or_create(user=bob)[0].key).get("/api/v1/wallets/")
    assert api.status_code == 200
    assert "did" not in api.cookies
    assert "Content-Security-Policy" not in api
    assert "X-Frame-Options" not in api
    # a session-authenticated write from the browser still needs the CSRF token (DRF checks it)
    forged = browser.post("/api/v1/api-keys/", {"name": "x", "scopes": ["read"]})
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["error"]["message"]
