"""The API's order book after a take (issue 17): the cached page's rows of the offer taken and of
its maker's other offers are read again and put in place (marketplace.book_cache.offer_taken,
OfferListApi._patch_page) instead of the whole page being rebuilt; what a reader sees is what a
page built afresh shows, and whenever a patch could be wrong the page is built afresh."""

from __future__ import annotations

import re
import threading
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connections
from django.test import Client

from accounts.tests.factories import UserFactory
from common import hotcache
from conftest import require_postgres
from escrow import services as escrow_services
from marketplace import book_cache
from marketplace.api import views
from marketplace.api.views import OfferListApi
from marketplace.tests.factories import fund, make_offer
from marketplace.tests.test_book_cache import (  # noqa: F401 (_fresh_cache: a fixture)
    BOOK,
    _fresh_cache,
    api_for,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_postgres()


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """How often the API built a page and patched one."""
    seen = {"build": 0, "patch": 0}
    build, patch = OfferListApi._public_page, OfferListApi._patch_page

    def counted_build(self, *args, **kwargs):
        seen["build"] += 1
        return build(self, *args, **kwargs)

    def counted_patch(self, *args, **kwargs):
        seen["patch"] += 1
        return patch(self, *args, **kwargs)

    monkeypatch.setattr(OfferListApi, "_public_page", counted_build)
    monkeypatch.setattr(OfferListApi, "_patch_page", counted_patch)
    return seen


def rows(client, path: str = BOOK) -> list[dict]:
    response = client.get(path)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def afresh(client) -> list[dict]:
    """The same page built from PostgreSQL now: min_completion_rate=0 keeps every row and is
    never cached."""
    return rows(client, BOOK + "&min_completion_rate=0")


def available(page: list[dict]) -> dict[int, str]:
    return {row["id"]: row["available"] for row in page}


@pytest.fixture
def book(alice, carol):
    """alice's two sell offers, each as large as her whole balance (so a take of one lowers the
    other's depth too), and carol's."""
    fund(alice, "BTC", "1")
    fund(carol, "BTC", "1")
    return (
        make_offer(alice, price="80000", amount="1"),
        make_offer(alice, price="80500", amount="1"),
        make_offer(carol, price="81000", amount="0.5"),
    )


def test_a_take_patches_the_offer_and_its_makers_others(bob, book, calls):
    first, second, third = book
    api = api_for(bob)
    before = {
        o.pk: v for o, v in zip(book, ["1.00000000", "1.00000000", "0.50000000"], strict=True)
    }
    assert available(rows(api)) == before
    # when bob takes 0.3 of alice's first offer (0.3003 of her balance with the fee)
    escrow_services.trade_open(offer_id=first.pk, taker=bob, amount="0.3")
    # then the next read patches the page: both of alice's rows show what is left of her
    # balance, carol's is as it was, and the page is the page built afresh
    page = rows(api)
    assert calls == {"build": 1, "patch": 1}
    left = "0.69970000"
    assert available(page) == {first.pk: left, second.pk: left, third.pk: "0.50000000"}
    assert page == afresh(api)
    # and the patched page is what the cache holds now: the read after it neither builds nor
    # patches
    assert rows(api) == page
    assert calls == {"build": 2, "patch": 1}  # the second build: afresh()'s uncached page


def test_a_take_on_an_offer_off_the_page_leaves_it_cached(bob, alice, book, calls):
    api = api_for(bob)
    rows(api, BOOK + "&limit=1")  # alice's first offer only
    client = hotcache.raw_client()
    (key,) = list(client.scan_iter(match="*book:page:*"))
    stored = client.get(key)
    escrow_services.trade_open(offer_id=book[2].pk, taker=bob, amount="0.1")  # carol's
    assert rows(api, BOOK + "&limit=1")[0]["available"] == "1.00000000"
    assert calls == {"build": 1, "patch": 1}
    assert client.get(key) == stored  # nothing on the page changed: nothing stored again


def test_a_row_that_left_the_book_builds_the_page_afresh(bob, alice, carol, calls):
    # given alice's two offers backed by 0.5 BTC, the second asking at least 20,000 EUR a trade
    fund(alice, "BTC", "0.5")
    first = make_offer(alice, price="80000", amount="0.5")
    second = make_offer(alice, price="80500", amount="0.5", min_fiat="20000")
    api = api_for(bob)
    assert [r["id"] for r in rows(api)] == [first.pk, second.pk]
    # when a take leaves her 0.2 BTC: too little for the second offer's minimum (0.248 BTC)
    escrow_services.trade_open(offer_id=first.pk, taker=bob, amount="0.3")
    # then that row is gone, from a page built afresh
    page = rows(api)
    assert [r["id"] for r in page] == [first.pk]
    assert calls == {"build": 2, "patch": 1}
    assert page == afresh(api)


def test_more_rows_than_a_patch_reads_build_the_page_afresh(bob, book, calls, monkeypatch):
    monkeypatch.setattr(views, "PATCH_ROWS", 1)  # alice has two rows on the page
    api = api_for(bob)
    rows(api)
    escrow_services.trade_open(offer_id=book[0].pk, taker=bob, amount="0.3")
    page = rows(api)
    assert calls == {"build": 2, "patch": 1}
    assert page == afresh(api)


def test_changes_the_log_lost_build_the_page_afresh(bob, book, calls, monkeypatch):
    api = api_for(bob)
    rows(api)
    book_cache.offer_taken(book[0])
    rows(api)
    assert calls == {"build": 1, "patch": 1}
    # when the log began again (it grew past LOG_BYTES) after the cached page
    monkeypatch.setattr(book_cache, "LOG_BYTES", 40)  # two changes
    for _ in range(3):
        book_cache.offer_taken(book[2])
    rows(api)
    assert calls == {"build": 2, "patch": 1}
    # and when the log expired with a change the page had not seen
    book_cache.offer_taken(book[2])
    side, asset_id, fiat_id = "sell", book[0].asset_id, book[0].fiat_id
    cache.delete(book_cache.log_key(side=side, asset_id=asset_id, fiat_id=fiat_id))
    book_cache.offer_taken(book[2])
    rows(api)
    assert calls == {"build": 3, "patch": 1}
    # while a log that expired with nothing unseen in it goes on being patched
    cache.delete(book_cache.log_key(side=side, asset_id=asset_id, fiat_id=fiat_id))
    book_cache.offer_taken(book[2])
    rows(api)
    assert calls == {"build": 3, "patch": 2}


def test_a_patched_page_lives_no_longer_than_the_page_it_patched(bob, book):
    api = api_for(bob)
    rows(api)
    client = hotcache.raw_client()
    (key,) = [k for k in client.scan_iter(match="*book:page:*")]
    version, _, built_at, _ = hotcache.loads(client.get(key))
    escrow_services.trade_open(offer_id=book[0].pk, taker=bob, amount="0.3")
    rows(api)
    again = hotcache.loads(client.get(key))
    assert (again[0], again[2]) == (version, built_at)
    assert 0 < client.pttl(key) <= 1000


def test_a_page_across_books_and_the_html_book_are_built_afresh_after_a_take(bob, book):
    api = api_for(bob)
    across = "/api/v1/offers/?side=sell"
    rows(api, across)
    browser = Client()
    browser.get("/?side=buy&asset=BTC&fiat=EUR")
    escrow_services.trade_open(offer_id=book[0].pk, taker=bob, amount="0.3")
    assert available(rows(api, across))[book[1].pk] == "0.69970000"
    html = browser.get("/?side=buy&asset=BTC&fiat=EUR").content.decode()
    cache.clear()
    fresh = browser.get("/?side=buy&asset=BTC&fiat=EUR").content.decode()

    def blank(page: str) -> str:
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "CSRF", page)

    assert blank(html) == blank(fresh)
    assert "0.6997" in html


def test_the_change_log_reader():
    changes = book_cache._changes_after
    log = b"7=1.2;8=3.2;9=5.4;"
    assert changes(log, 9) == (set(), set())
    assert changes(log, 7) == ({3, 5}, {2, 4})
    assert changes(log, 6) == ({1, 3, 5}, {2, 4})
    assert changes(log, 5) is None  # change 6 is gone: the log began again at 7
    assert changes(log, 0) is None  # the log began after the page was built
    assert changes(None, 0) == (set(), set())
    assert changes(None, 9) is None  # the log expired
    assert changes(b"1000=1.2;", 9) is None  # and began again
    assert book_cache._last_number(log) == 9


@pytest.mark.django_db(transaction=True)
def test_takes_racing_readers_end_on_the_page_built_afresh(alice, carol):
    # given a cached page of two makers' offers
    fund(alice, "BTC", "5")
    fund(carol, "BTC", "5")
    offers = [make_offer(alice, price=str(80000 + i), amount="2") for i in range(2)]
    offers += [make_offer(carol, price=str(81000 + i), amount="2") for i in range(2)]
    takers = [UserFactory() for _ in range(8)]
    reader = api_for(takers[0])
    rows(reader)
    # when eight takers take at once while four threads read the book
    done = threading.Event()
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(takers) + 4)

    def take(i: int) -> None:
        try:
            barrier.wait()
            escrow_services.trade_open(offer_id=offers[i % 4].pk, taker=takers[i], amount="0.1")
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    def read() -> None:
        try:
            api = api_for(takers[0])
            barrier.wait()
            while not done.is_set():
                rows(api)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    takes = [threading.Thread(target=take, args=(i,)) for i in range(len(takers))]
    reads = [threading.Thread(target=read) for _ in range(4)]
    for t in takes + reads:
        t.start()
    for t in takes:
        t.join(timeout=60)
    done.set()
    for t in reads:
        t.join(timeout=60)
    assert not failures, failures
    # then a read after the last commit is the page built afresh
    page = rows(reader)
    assert page == afresh(reader)
    total = sum(Decimal(r["available"]) for r in page)
    assert total == Decimal("2") * 4 - Decimal("0.1") * 8
