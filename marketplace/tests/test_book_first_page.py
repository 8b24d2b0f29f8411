"""The book's first page from a prepared read (marketplace.api.views._FirstPage, issue 17): the
same offers, order and next link as Django's queryset gives; the pages after it (a cursor) and
the pages with other filters are read as before; the hidden makers stay hidden."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Profile
from marketplace.api import views
from marketplace.tests.factories import fund, make_offer
from marketplace.tests.test_book_cache import api_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(refdata):
    from accounts.tests.factories import UserFactory

    return UserFactory(username="dave")


def _walk(client: APIClient, url: str) -> tuple[list[int], int]:
    """Every offer id, page after page, and how many pages."""
    ids: list[int] = []
    pages = 0
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, answer.content
        ids += [row["id"] for row in answer.json()["results"]]
        pages += 1
        following = answer.json()["next"]
        url = urlsplit(following)._replace(scheme="", netloc="").geturl() if following else ""
    return ids, pages


@pytest.mark.parametrize("side", ["sell", "buy"])
def test_the_first_page_and_the_next_are_the_querysets(alice, bob, carol, dave, side, monkeypatch):
    for user in (alice, bob, carol):
        fund(user)
    fund(bob, "ETH", "1")
    for user, price in ((alice, "80500"), (bob, "79000"), (carol, "81000"), (alice, "79000")):
        make_offer(user, side=side, price=price, amount="0.2")
    make_offer(bob, side=side, asset="ETH", price="3000", amount="1")  # another book
    Profile.objects.filter(user=carol).update(suspended_until=timezone.now().replace(year=2100))
    client = api_for(dave)
    url = f"/api/v1/offers/?side={side}&asset=btc&fiat=eur&limit=2"
    prepared_ids, pages = _walk(client, url)
    # Django's queryset, the prepared read switched off: the same offers in the same order
    monkeypatch.setattr(views, "FIRST_PAGE_PARAMS", frozenset())
    djangos_ids, _ = _walk(client, url)
    assert prepared_ids == djangos_ids
    assert pages == 2
    assert len(prepared_ids) == 3  # carol is suspended: her offer is not in the book
    price_order = views.Offer.objects.filter(pk__in=prepared_ids).order_by(
        "-price" if side == "buy" else "price", ("-" if side == "buy" else "") + "id"
    )
    assert prepared_ids == [o.pk for o in price_order]


def test_only_the_plain_first_page_is_prepared(alice, dave):
    fund(alice)
    make_offer(alice, price="80000")
    client = api_for(dave)
    before = set(views._FIRST_PAGES)
    assert client.get("/api/v1/offers/?side=sell&asset=BTC&fiat=EUR&maker=alice").status_code == 200
    assert client.get("/api/v1/offers/?asset=BTC&fiat=EUR").status_code == 200
    assert set(views._FIRST_PAGES) == before
    assert client.get("/api/v1/offers/?side=sell&asset=BTC&fiat=EUR&limit=7").status_code == 200
    assert ("sell", 8) in views._FIRST_PAGES  # a page of 7 reads 8 rows: is there a next one?
