"""The order book's public part from the cache (issue 17): every kind of change to an offer of
a book, or to its price index, is seen on the very next read; what depends on the viewer is
applied after the cache."""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Profile
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


# --- the HTML book (GET /): the same cache, the viewer's part after it ------------------------

PAGE = "/?side=buy&asset=BTC&fiat=EUR"  # the visitor buys: the sell offers


def browser_for(user) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def html_ids(browser: Client, path: str = PAGE) -> list[int]:
    response = browser.get(path)
    assert response.status_code == 200
    return row_ids(response.content.decode())


def row_ids(html: str) -> list[int]:
    """The offers of the page's rows, in order."""
    return [
        int(pk)
        for pk in re.findall(r'<article class="offer-row" aria-label="Offer (\d+) by ', html)
    ]


@pytest.mark.parametrize("change", ["pause", "delete", "edit"])
def test_every_change_to_an_offer_is_seen_on_the_next_html_read(bob, alice, two_offers, change):
    # given a cached HTML page of the book
    first, second = two_offers
    browser = browser_for(bob)
    assert html_ids(browser) == [first.pk, second.pk]
    assert book_queries(browser, PAGE) == 0  # the second read: from the cache
    # when an offer of that book changes
    if change == "pause":
        services.offer_set_active(offer_id=first.pk, actor=alice, active=False)
        expected = [second.pk]
    elif change == "delete":
        services.offer_delete(offer_id=first.pk, actor=alice)
        expected = [second.pk]
    else:
        services.offer_update(offer_id=first.pk, actor=alice, price="82000")
        expected = [second.pk, first.pk]
    # then the very next read shows it, as rendered
    response = browser.get(PAGE)
    html = response.content.decode()
    assert row_ids(html) == expected
    assert (f"Offer {first.pk} by alice" in html) is (change == "edit")
    if change == "edit":
        assert "82,000.00" in html


def test_a_blocked_maker_is_hidden_in_the_html_book_for_that_viewer_only(
    bob, alice, carol, two_offers
):
    first, second = two_offers
    # the page cached by carol's read
    assert html_ids(browser_for(carol)) == [first.pk, second.pk]
    # bob blocked alice: her offer is not on bob's page, the cache notwithstanding
    trader_relation_add(actor=bob, username="alice", kind="blocked")
    page = browser_for(bob).get(PAGE).content.decode()
    assert f"Offer {first.pk} by alice" not in page
    assert f"Offer {second.pk} by carol" in page
    assert '<span class="method">SEPA transfer</span>' in page  # from the cached page
    # carol, and a visitor who is not logged in, still see both from the same cached page
    assert html_ids(browser_for(carol)) == [first.pk, second.pk]
    assert html_ids(Client()) == [first.pk, second.pk]


def test_requirements_in_the_html_book_are_the_viewers(bob, alice):
    fund(alice, "BTC", "1")
    demanding = make_offer(alice, min_taker_trades=5)
    # cached by alice's own read: her own offer, to edit
    mine = browser_for(alice).get(PAGE).content.decode()
    assert "Your offer · Edit" in mine
    assert "Not open to you" not in mine
    assert "5+ completed trades" in mine  # the requirement in words, for everyone
    # bob, with no trades, reads the same cached page and is told why it is not open to him
    theirs = browser_for(bob).get(PAGE).content.decode()
    assert book_queries(browser_for(bob), PAGE) == 0
    assert "Not open to you" in theirs
    assert "Your offer · Edit" not in theirs
    assert "5+ completed trades" in theirs
    assert f'href="/offers/{demanding.pk}/"' in theirs


def test_online_status_is_read_fresh_past_the_cache(bob, alice, two_offers):
    browser = browser_for(bob)
    Profile.objects.filter(user=alice).update(last_seen=None)
    assert 'data-testid="online"' not in browser.get(PAGE).content.decode()
    # alice comes online: no offer changed, the page is cached, and yet she shows online
    Profile.objects.filter(user=alice).update(last_seen=timezone.now())
    assert book_queries(browser, PAGE) == 0
    assert 'data-testid="online"' in browser.get(PAGE).content.decode()


def page_read_queries(browser: Client) -> list[str]:
    # The per-process memos of the forms' choices and of parsed queries last
    # ORDER_BOOK_CACHE_SECONDS: each measured read starts without them (else the count depends
    # on whether the previous read was less than a second ago).
    from marketplace import forms, views

    forms._book_reference = None
    views._query_memo.clear()
    with CaptureQueriesContext(connection) as ctx:
        assert browser.get(PAGE).status_code == 200
    return [q["sql"] for q in ctx.captured_queries]


def test_a_cached_html_page_costs_a_few_queries_whatever_its_length(bob, alice, carol):
    # given a page of two offers, read once (cached)
    fund(alice, "BTC", "5")
    fund(carol, "BTC", "5")
    make_offer(alice, price="80000")
    make_offer(carol, price="81000", min_taker_trades=3)
    browser = browser_for(bob)
    browser.get(PAGE)
    two = page_read_queries(browser)
    # and the same book grown to twelve offers by more makers, read once
    for i in range(5):
        make_offer(alice, price=str(82000 + i), payment_methods=["sepa", "revolut"])
        make_offer(carol, price=str(83000 + i), min_account_age_days=1)
    browser.get(PAGE)
    twelve = page_read_queries(browser)
    # then a cached read costs the same few queries: none on offers, none per row
    assert not [q for q in twelve if "marketplace_offer" in q]
    assert len(twelve) == len(two), "\n".join(twelve)
    # the session and user; the filter and quick-trade forms' choices (assets, fiats, methods,
    # each twice); the viewer's profile, blocks, facts for the requirements (four), last seen
    # of the page's makers, buying paused, unread notifications: 18 for any page length
    assert len(twelve) <= 18, "\n".join(twelve)


def test_last_seen_is_read_as_the_profiles_hold_it(alice, bob, carol):
    # last_seen_of runs on every read of the HTML book: one plain statement, the ORM's answer
    from marketplace.selectors import last_seen_of

    Profile.objects.update_or_create(user=alice, defaults={"last_seen": timezone.now()})
    Profile.objects.update_or_create(user=bob, defaults={"last_seen": None})
    ids = [alice.pk, bob.pk, carol.pk, 10**9]  # carol may have no profile yet; no such user
    expected = dict(Profile.objects.filter(user_id__in=ids).values_list("user_id", "last_seen"))
    with CaptureQueriesContext(connection) as ctx:
        assert last_seen_of(user_ids=ids) == expected
    assert len(ctx.captured_queries) == 1
    assert expected[alice.pk] is not None
    assert expected[bob.pk] is None
    assert last_seen_of(user_ids=[]) == {}
