"""The order book's public part from the cache (issue 17): every kind of change to an offer of
a book, or to its price index, is seen on the very next read; what depends on the viewer is
applied after the cache."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.services import trader_relation_add
from common import hotcache
from escrow import services as escrow_services
from marketplace import services
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db

BOOK = "/api/v1/offers/?side=sell&asset=BTC&fiat=EUR"


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    settings.ORDER_BOOK_CACHE_SECONDS = 1  # as in production (the test settings turn it off)
    cache.clear()
    hotcache.reset()
    yield
    cache.clear()


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def book_ids(client, path: str = BOOK) -> list[int]:
    response = client.get(path)
    assert response.status_code == 200, response.content
    return [o["id"] for o in response.json()["results"]]


def book_queries(client, path: str = BOOK) -> int:
    with CaptureQueriesContext(connection) as ctx:
        client.get(path)
    return sum(1 for q in ctx.captured_queries if "marketplace_offer" in q["sql"])


@pytest.fixture
def two_offers(alice, carol):
    fund(alice, "BTC", "1")
    fund(carol, "BTC", "1")
    return make_offer(alice, price="80000"), make_offer(carol, price="81000")


def test_the_book_is_read_from_the_cache_once_built(bob, two_offers):
    api = api_for(bob)
    assert book_ids(api) == [o.pk for o in two_offers]
    # the second read runs no query on offers: the public part came from the cache
    assert book_queries(api) == 0


@pytest.mark.parametrize("change", ["pause", "delete", "edit", "exhaust", "create"])
def test_every_change_to_an_offer_is_seen_on_the_next_read(bob, alice, two_offers, change):
    # given a cached book
    api = api_for(bob)
    first, second = two_offers
    assert book_ids(api) == [first.pk, second.pk]
    # when an offer of that book changes
    if change == "pause":
        services.offer_set_active(offer_id=first.pk, actor=alice, active=False)
        expected = [second.pk]
    elif change == "delete":
        services.offer_delete(offer_id=first.pk, actor=alice)
        expected = [second.pk]
    elif change == "edit":
        services.offer_update(offer_id=first.pk, actor=alice, price="82000")
        expected = [second.pk, first.pk]
    elif change == "exhaust":  # taken down to less than its minimum: the platform closes it
        escrow_services.trade_open(offer_id=first.pk, taker=bob, amount="0.4999")
        expected = [second.pk]
    else:
        third = make_offer(alice, price="79000")
        expected = [third.pk, first.pk, second.pk]
    # then the very next read shows it
    assert book_ids(api) == expected


def test_a_take_shows_the_new_depth_at_once(bob, two_offers):
    api = api_for(bob)
    first, _ = two_offers
    api.get(BOOK)
    escrow_services.trade_open(offer_id=first.pk, taker=bob, amount="0.1")
    row = next(o for o in api.get(BOOK).json()["results"] if o["id"] == first.pk)
    assert row["available"] == "0.40000000"


def test_a_price_index_move_reorders_the_floating_offers_at_once(bob, alice, carol, two_offers):
    # given a floating offer below the fixed ones, cached
    services.price_index_set(asset_code="BTC", fiat_code="EUR", price="70000")
    floating = make_offer(carol, price_type="floating", price=None, margin_percent="1")
    api = api_for(bob)
    assert book_ids(api)[0] == floating.pk
    # when the index moves up
    services.price_index_set(asset_code="BTC", fiat_code="EUR", price="90000")
    # then the next read has it last, at its new price
    rows = api.get(BOOK).json()["results"]
    assert rows[-1]["id"] == floating.pk
    assert rows[-1]["effective_price"] == "90900.00"


def test_another_book_keeps_its_cache(bob, alice, two_offers):
    api = api_for(bob)
    api.get(BOOK)
    # an offer of the buy side changes: the sell side's page is still served from the cache
    fund(alice, "BTC", "1")
    make_offer(alice, side="buy", price="79000")
    assert book_queries(api) == 0


def test_blocked_makers_are_left_out_after_the_cache(bob, alice, carol, two_offers):
    first, second = two_offers
    # the book cached by someone else's read
    assert book_ids(api_for(carol)) == [first.pk, second.pk]
    # bob blocked alice: her offer is not in bob's book, the cache notwithstanding
    trader_relation_add(actor=bob, username="alice", kind="blocked")
    assert book_ids(api_for(bob)) == [second.pk]
    # and alice, blocked by bob, doesn't see his... nor he hers; carol still sees both
    assert book_ids(api_for(carol)) == [first.pk, second.pk]


def test_requirements_and_own_offers_are_the_viewers(bob, alice, carol):
    fund(alice, "BTC", "1")
    demanding = make_offer(alice, min_taker_trades=5)
    # cached by alice's own read: her own offer is open to her
    mine = api_for(alice).get(BOOK).json()["results"]
    assert [(o["id"], o["unmet_requirements"]) for o in mine] == [(demanding.pk, [])]
    # bob, with no trades, reads the same cached page and is told why it is not open to him
    theirs = api_for(bob).get(BOOK).json()["results"]
    assert theirs[0]["unmet_requirements"] == [
        "The maker asks for at least 5 completed trades; you have 0."
    ]


def test_filters_that_are_not_cached_still_work(bob, two_offers):
    first, second = two_offers
    api = api_for(bob)
    assert book_ids(api, BOOK + "&amount=100") == [first.pk, second.pk]
    assert book_ids(api, BOOK + "&maker=carol") == [second.pk]


def test_the_html_book_shows_a_paused_offer_gone_on_the_next_read(bob, alice, two_offers):
    first, second = two_offers
    browser = Client()
    browser.force_login(bob)
    page = browser.get("/?side=buy&asset=BTC&fiat=EUR").content.decode()
    assert f"Offer {first.pk} by alice" in page
    services.offer_set_active(offer_id=first.pk, actor=alice, active=False)
    page = browser.get("/?side=buy&asset=BTC&fiat=EUR").content.decode()
    assert f"Offer {first.pk} by alice" not in page
    assert f"Offer {second.pk} by carol" in page
