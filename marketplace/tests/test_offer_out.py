"""OfferOut's unrolled to_representation (the order book's fast path) against DRF's own walk over
the declared fields, for every kind of offer the book can hold."""

from __future__ import annotations

import json

import pytest
from rest_framework.renderers import JSONRenderer

from accounts.tests.factories import complete
from ledger.models import Asset
from marketplace import services
from marketplace.api.serializers import OfferOut
from marketplace.api.views import _book_maker_stats, _maker_stats
from marketplace.models import Offer
from marketplace.selectors import (
    attach_reference_data,
    offer_book,
    offer_get,
    offer_payment_method_codes,
    offers_unmet_for_viewer,
)
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db


def _offers(alice, bob, carol) -> list[Offer]:
    fund(alice, "BTC", "3")
    fund(alice, "ETH", "5")
    fund(carol, "USDT", "1000")
    complete(make_trade(alice, bob, amount="0.01"))  # alice: 1 completed trade, 100%
    made = [
        make_offer(alice, price="80123.45", payment_methods=["sepa", "revolut"]),
        make_offer(
            alice,
            asset="ETH",
            price_type="floating",
            price=None,
            margin_percent="-1.25",
            amount="1.123456789012345678",
            min_fiat="5",
            max_fiat="900",
        ),
        make_offer(
            carol,
            asset="USDT",
            price="0.93",
            amount="250.5",
            min_taker_tier=1,
            min_taker_trades=3,
            min_account_age_days=7,
            trusted_only=True,
            terms="<b>No</b> third-party payments & no chargebacks.",
            payment_methods=["wise"],
        ),
        make_offer(carol, side="buy", price="79000", payment_methods=["zelle", "sepa"]),
    ]
    return made


def test_book_rows_match_drfs_generic_walk(alice, bob, carol):
    made = _offers(alice, bob, carol)
    for side in ("sell", "buy"):
        rows = list(offer_book(side=side, viewer=bob))
        assert rows
        context = {
            "maker_stats": _book_maker_stats(rows),
            "unmet": offers_unmet_for_viewer(offers=rows, viewer=bob),
            "payment_method_codes": offer_payment_method_codes(offer_ids=[o.pk for o in rows]),
        }
        out = OfferOut(context=context)
        for offer in rows:
            fast, generic = out.to_representation(offer), out.generic_representation(offer)
            assert fast == generic
            assert list(fast) == list(generic)  # the same key order: the same JSON
            assert JSONRenderer().render(fast) == JSONRenderer().render(generic)
    unmet = next(o for o in made if o.trusted_only)
    shown = OfferOut(
        unmet, context={"unmet": offers_unmet_for_viewer(offers=[unmet], viewer=bob)}
    ).data
    assert shown["unmet_requirements"]  # the case with reasons was really covered
    assert json.loads(JSONRenderer().render(shown))["terms"].startswith("<b>No</b>")


def test_single_offers_without_the_books_context_match(alice, bob, carol):
    """The detail, create and update answers: a plain Offer
    or offer_get's annotated one, with or without maker stats."""
    made = _offers(alice, bob, carol)
    for offer in made:
        for obj in (offer, Offer.objects.get(pk=offer.pk), offer_get(offer_id=offer.pk)):
            for context in ({}, {"maker_stats": _maker_stats([obj])}):
                out = OfferOut(context=context)
                assert out.to_representation(obj) == out.generic_representation(obj)


def test_reference_data_comes_from_the_process_copy(alice, django_assert_num_queries):
    """The book's assets and fiats: read once per process, re-read when an id is new to it."""
    fund(alice, "BTC", "1")
    offers = [make_offer(alice)]
    plain = list(Offer.objects.filter(pk__in=[o.pk for o in offers]))
    attach_reference_data(plain)  # whatever this process knew before
    with django_assert_num_queries(0):
        attach_reference_data(plain)
        assert (plain[0].asset.code, plain[0].asset.precision) == ("BTC", 8)
        assert (plain[0].fiat.code, plain[0].fiat.precision) == ("EUR", 2)
    Asset.objects.create(code="SOL", name="Solana", precision=9)
    services.price_index_set(asset_code="SOL", fiat_code="EUR", price="150")
    fund(alice, "SOL", "10")
    sol = Offer.objects.get(pk=make_offer(alice, asset="SOL", price="151").pk)
    with django_assert_num_queries(1):  # the new asset's id: the assets re-read
        attach_reference_data([sol])
    assert (sol.asset.code, sol.asset.precision) == ("SOL", 9)


def test_the_api_book_builds_no_maker_objects_and_no_query_per_offer(alice, bob, carol, settings):
    """The book annotates the makers' usernames: the trusted-only reasons name the maker without
    a query per offer, and the page's queries do not grow with its offers."""
    settings.ORDER_BOOK_CACHE_SECONDS = 0  # each page built afresh (test_book_cache: the cache)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=bob).key}")

    def book() -> tuple[int, list[dict]]:
        with CaptureQueriesContext(connection) as queries:
            answer = client.get("/api/v1/offers/?side=sell&asset=BTC&fiat=EUR")
        assert answer.status_code == 200, answer.content
        return len(queries), answer.json()["results"]

    fund(alice, "BTC", "1")
    fund(carol, "BTC", "1")
    make_offer(alice, trusted_only=True, amount="0.1")
    make_offer(carol, trusted_only=True, amount="0.1")
    book()  # the makers' stats are now in the cache
    few, rows = book()
    for maker in (alice, carol, carol):
        make_offer(maker, trusted_only=True, amount="0.1")
    many, rows = book()
    assert len(rows) == 5
    assert many == few
    reasons = {r["maker"]["username"]: r["unmet_requirements"] for r in rows}
    assert reasons["alice"] == ["Only traders on alice's trusted list may take it."]
    assert reasons["carol"] == ["Only traders on carol's trusted list may take it."]
