"""The lean API read path (issue 17, point 2): the JSON renderer writes DRF's bytes, the cache
backend keeps one Redis client, and the book's viewer-dependent part (the blocked makers) comes
from the cache with the page, in one round trip, seeing a block on the very next read."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.translation import gettext_lazy
from rest_framework.authtoken.models import Token
from rest_framework.renderers import JSONRenderer as DrfJSONRenderer
from rest_framework.test import APIClient

from accounts.services import trader_relation_add, trader_relation_remove
from common import hotcache
from common.renderers import JSONRenderer
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db

BOOK = "/api/v1/offers/?side=sell&asset=BTC&fiat=EUR"


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    # As in production (the test settings turn both off: entries would outlive a test's rows).
    settings.ORDER_BOOK_CACHE_SECONDS = 1
    settings.BLOCKED_CACHE_SECONDS = 60
    cache.clear()
    hotcache.reset()
    yield
    cache.clear()


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


# --- the renderer -------------------------------------------------------------------------------

PAYLOADS = [
    {"results": [{"id": 1, "price": "80000.00", "maker": {"username": "alice"}}], "next": None},
    {"unicode": "Zürich — 東京 💶", "separators": "\u2028 and \u2029", "quote": '"\\'},
    {
        "at": dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        "offset": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "day": dt.date(2026, 1, 2),
        "time": dt.time(3, 4, 5),
        "span": dt.timedelta(minutes=90),
    },
    {"decimal": Decimal("0.015"), "uuid": uuid.UUID(int=7), "lazy": gettext_lazy("Invalid input.")},
    {1: "int key", "nested": [[], {}, (1, 2), [True, False, None]], "big": 2**70, "neg": -(2**63)},
    [1, "two", 3.5, {"four": [5]}],
    "a bare string",
]


@pytest.mark.parametrize("data", PAYLOADS, ids=range(len(PAYLOADS)))
def test_the_renderer_writes_the_bytes_drf_writes(data):
    assert JSONRenderer().render(data) == DrfJSONRenderer().render(data)


def test_an_indented_answer_is_drfs_and_nothing_is_empty():
    data = {"a": [1, 2]}
    indented = "application/json; indent=4"
    assert JSONRenderer().render(data, indented) == DrfJSONRenderer().render(data, indented)
    assert JSONRenderer().render(None) == b""


def test_what_json_cannot_hold_fails_as_before():
    with pytest.raises(TypeError):
        JSONRenderer().render({"object": object()})


def test_the_api_answers_with_the_bytes_drf_would_write(bob, alice, carol):
    # given a book with offers, and a wallet
    fund(alice, "BTC", "1")
    fund(bob, "BTC", "2")
    make_offer(alice, price="80000")
    make_offer(alice, price="80500", terms="SEPA only — Zürich")
    api = api_for(bob)
    for path in (BOOK, "/api/v1/wallets/", "/api/v1/ledger/public-key/", "/api/v1/prices/"):
        # when it is read
        response = api.get(path)
        # then the body is what DRF's own renderer makes of the same data
        assert response.status_code == 200, path
        assert response["Content-Type"] == "application/json"
        assert response.content == DrfJSONRenderer().render(response.data), path


# --- the cache backend --------------------------------------------------------------------------


def test_the_cache_keeps_one_redis_client_and_still_works():
    client = cache._cache.get_client()
    assert cache._cache.get_client(write=True) is client
    cache.set("lean:probe", {"x": Decimal("1.5")}, 5)
    assert cache.get("lean:probe") == {"x": Decimal("1.5")}
    assert hotcache.raw_client() is client


# --- the book's viewer part from the cache ------------------------------------------------------


@pytest.fixture
def two_offers(alice, carol):
    fund(alice, "BTC", "1")
    fund(carol, "BTC", "1")
    return make_offer(alice, price="80000"), make_offer(carol, price="81000")


def book_ids(api: APIClient, path: str = BOOK) -> list[int]:
    response = api.get(path)
    assert response.status_code == 200, response.content
    return [o["id"] for o in response.json()["results"]]


def test_a_cached_book_read_runs_no_query_at_all(bob, two_offers):
    api = api_for(bob)
    book_ids(api)
    # when the book is read again: the page, the credentials and bob's blocked set are cached
    with CaptureQueriesContext(connection) as ctx:
        ids = book_ids(api)
    # then no query is run, and the book is whole
    assert ids == [o.pk for o in two_offers]
    assert [q["sql"] for q in ctx.captured_queries] == []


def test_a_block_and_its_lifting_are_seen_on_the_next_read(bob, alice, carol, two_offers):
    first, second = two_offers
    api = api_for(bob)
    # bob's blocked set cached (empty), the page cached
    assert book_ids(api) == [first.pk, second.pk]
    assert book_ids(api) == [first.pk, second.pk]
    # when bob blocks alice: her offer is gone from his very next read
    relation = trader_relation_add(actor=bob, username="alice", kind="blocked")
    assert book_ids(api) == [second.pk]
    # carol (not blocked) still sees both
    assert book_ids(api_for(carol)) == [first.pk, second.pk]
    # when carol blocks bob, it works the other way round too
    trader_relation_add(actor=carol, username="bob", kind="blocked")
    assert book_ids(api) == []
    # when bob lifts his block of alice, her offer is back at once
    trader_relation_remove(actor=bob, relation_id=relation.pk)
    assert book_ids(api) == [first.pk]
    # a block replaced by trust is lifted too
    trader_relation_add(actor=carol, username="bob", kind="trusted")
    assert book_ids(api) == [first.pk, second.pk]


def _without_presence(rows: list[dict]) -> list[dict]:
    # The makers' last seen (and so "online") is part of the public page, as old as the page (up
    # to ORDER_BOOK_CACHE_SECONDS); the viewers' own requests move it between two reads.
    drop = {"online", "last_seen"}
    return [{**r, "maker": {k: v for k, v in r["maker"].items() if k not in drop}} for r in rows]


def test_the_cached_book_gives_each_viewer_the_rows_of_the_uncached_one(
    bob, alice, carol, two_offers
):
    # given a third maker with a demanding offer, and a block between bob and carol
    fund(bob, "BTC", "1")
    make_offer(bob, price="80200")
    make_offer(alice, price="80300", min_taker_trades=5, auto_reply="Hi, alice here: SEPA only.")
    trader_relation_add(actor=carol, username="bob", kind="blocked")
    for viewer in (bob, alice, carol):
        api = api_for(viewer)
        api.get(BOOK)  # the public page (and the viewer's blocked set) cached
        cached = api.get(BOOK).json()["results"]
        # the same book through the uncached path (a filter the cache does not serve)
        uncached = api.get(BOOK + "&min_completion_rate=0").json()["results"]
        assert _without_presence(cached) == _without_presence(uncached), viewer.username
    assert len(api_for(alice).get(BOOK).json()["results"]) == 4
    assert len(api_for(bob).get(BOOK).json()["results"]) == 3  # carol's left out


def test_a_makers_auto_reply_is_theirs_only_whoever_built_the_cached_page(bob, alice):
    # given alice's offer with an auto reply, the page cached by alice's own read
    fund(alice, "BTC", "1")
    offer = make_offer(alice, auto_reply="Hi, alice here: SEPA only.")
    mine = api_for(alice).get(BOOK).json()["results"]
    assert [(o["id"], o["auto_reply"]) for o in mine] == [(offer.pk, "Hi, alice here: SEPA only.")]
    # when bob reads the same cached page, he does not see alice's text
    theirs = api_for(bob).get(BOOK).json()["results"]
    assert [(o["id"], o["auto_reply"]) for o in theirs] == [(offer.pk, None)]
    # and alice still does, from the page bob's read left in the cache
    again = api_for(alice).get(BOOK).json()["results"]
    assert again[0]["auto_reply"] == "Hi, alice here: SEPA only."


# --- a token's look-up and both limits in one round trip ----------------------------------------


def _redis_commands(monkeypatch) -> list[str]:
    """The Redis commands this process sends from now on (the real server answers them)."""
    import redis

    sent: list[str] = []
    real = redis.Redis.execute_command

    def spy(self, *args, **options):
        sent.append(str(args[0]).upper())
        return real(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", spy)
    return sent


def test_a_cached_token_and_both_limits_cost_one_round_trip(bob, monkeypatch, settings):
    settings.API_RATE_LIMITS = {**settings.API_RATE_LIMITS, "key": "600/min", "ip": "1200/min"}
    api = api_for(bob)
    # the first call looks the token up (and caches it, with whom its limit counts)
    assert api.get("/api/v1/wallets/").status_code == 200
    sent = _redis_commands(monkeypatch)
    # when it calls again
    response = api.get("/api/v1/wallets/")
    # then one script answered both: who it is and the limits (no separate GET)
    assert response.status_code == 200
    assert sent == ["EVALSHA"]
    assert response["X-RateLimit-Remaining"] == str(600 - 2)  # the key's limit: 2 counted


def test_the_one_trip_keeps_the_limits_and_counts_per_user(bob, settings):
    settings.API_RATE_LIMITS = {**settings.API_RATE_LIMITS, "key": "3/min", "ip": "100/min"}
    api = api_for(bob)
    answers = [api.get("/api/v1/wallets/") for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r["X-RateLimit-Remaining"] for r in answers[:3]] == ["2", "1", "0"]
    assert int(answers[3]["Retry-After"]) > 0
    # the same user's limit, whatever path counted it: the key of the usual path holds all 3
    client = cache._cache.get_client()
    assert client.zcard(f"throttle_key_user{bob.pk}") == 3


def test_a_revoked_token_is_refused_on_the_next_call_through_the_one_trip(bob):
    from accounts.services import token_rotate

    old = Token.objects.get_or_create(user=bob)[0].key
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert api.get("/api/v1/wallets/").status_code == 200
    assert api.get("/api/v1/wallets/").status_code == 200  # through the one trip
    # when the token is rotated (the old one revoked)
    token_rotate(user=bob)
    # then the old one is refused at once, the new one works
    assert api.get("/api/v1/wallets/").status_code == 401
    assert api_for(bob).get("/api/v1/wallets/").status_code == 200


def test_the_html_book_uses_the_cached_blocked_set_and_sees_a_block_at_once(
    bob, alice, carol, two_offers
):
    from django.test import Client

    first, second = two_offers
    page = Client()
    page.force_login(bob)

    def offers_shown() -> list[int]:
        html = page.get("/?side=buy&asset=BTC&fiat=EUR").content.decode()
        return [o.pk for o in (first, second) if f"/offers/{o.pk}/" in html]

    assert offers_shown() == [first.pk, second.pk]
    relation = trader_relation_add(actor=bob, username="alice", kind="blocked")
    assert offers_shown() == [second.pk]
    trader_relation_remove(actor=bob, relation_id=relation.pk)
    assert offers_shown() == [first.pk, second.pk]
