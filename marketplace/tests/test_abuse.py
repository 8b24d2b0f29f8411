"""Finding 4: the book shows only real depth. An edit can't raise a sell offer past what its maker
holds, the book and quick trade show a sell offer's available amount capped by its maker's balance
(and hide it when that is below its minimum), makers have a cap on open offers, and fixed prices
far from the index are refused."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.tests.factories import set_tier
from common.errors import ValidationFailed
from escrow import services as escrow
from marketplace import selectors, services
from marketplace.models import PriceIndex
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _book(viewer, **params) -> dict[int, dict]:
    query = "&".join(f"{k}={v}" for k, v in {"asset": "BTC", "fiat": "EUR", **params}.items())
    answer = client_for(viewer).get(f"/api/v1/offers/?{query}")
    assert answer.status_code == 200, answer.content
    return {row["id"]: row for row in answer.json()["results"]}


class TestEditRechecksTheBalance:
    def test_raising_a_sell_offer_past_the_balance_is_refused(self, alice):
        # given alice holds 0.398 BTC and sells 0.3 of it
        fund(alice, "BTC", "0.398")
        offer = make_offer(alice, amount="0.3")
        # when she edits the offer to 5,000 BTC
        answer = client_for(alice).patch(
            f"/api/v1/offers/{offer.pk}/", {"amount": "5000"}, format="json"
        )
        # then it is refused naming amount, and the offer is unchanged
        assert answer.status_code == 400, answer.content
        assert "amount" in answer.json()["error"]["fields"]
        offer.refresh_from_db()
        assert (offer.amount, offer.available) == (Decimal("0.3"), Decimal("0.3"))

    def test_raising_within_the_balance_and_lowering_are_allowed(self, alice, bob):
        # given alice holds 1 BTC, sells 0.5, and bob took 0.1 of it (held in escrow)
        fund(alice, "BTC", "1")
        offer = make_offer(alice, amount="0.5")
        escrow.trade_open(offer_id=offer.pk, taker=bob, amount="0.1")
        # when she raises the total to 0.9 (0.8 left; she holds 0.8999 after the hold)
        services.offer_update(offer_id=offer.pk, actor=alice, amount="0.9")
        # then it is accepted; going past what she holds is not
        offer.refresh_from_db()
        assert offer.available == Decimal("0.8")
        with pytest.raises(ValidationFailed) as refused:
            services.offer_update(offer_id=offer.pk, actor=alice, amount="1.1")
        assert "amount" in refused.value.fields
        # and lowering is always allowed
        services.offer_update(offer_id=offer.pk, actor=alice, amount="0.2")

    def test_buy_offers_need_no_balance_to_edit(self, alice):
        # given a buy offer of a maker with nothing
        offer = make_offer(alice, side="buy", amount="0.1")
        # when raised
        services.offer_update(offer_id=offer.pk, actor=alice, amount="2")
        # then accepted
        offer.refresh_from_db()
        assert offer.amount == Decimal("2")


class TestTheBookShowsRealDepth:
    def test_a_sell_offer_shows_the_lesser_of_what_is_left_and_what_the_seller_holds(
        self, alice, bob, carol
    ):
        # given alice holds 1 BTC and has two sell offers of 0.8 each (each fits on its own)
        fund(alice, "BTC", "1")
        first = make_offer(alice, amount="0.8", price="80000")
        second = make_offer(alice, amount="0.8", price="80500")
        # when bob takes 0.5 from the first: alice now holds 1 - 0.5 - 0.0005 fee
        escrow.trade_open(offer_id=first.pk, taker=bob, amount="0.5")
        book = _book(carol, side="sell")
        # then the book shows 0.3 left on the first, and only 0.4995 on the second
        assert book[first.pk]["available"] == "0.30000000"
        assert book[second.pk]["available"] == "0.49950000"
        # and the offer's own page says the same
        answer = client_for(carol).get(f"/api/v1/offers/{second.pk}/")
        assert answer.json()["available"] == "0.49950000"

    def test_buy_offers_show_what_is_left(self, alice, carol):
        # given a buy offer from a maker holding nothing
        offer = make_offer(alice, side="buy", amount="0.4")
        # when the book is read
        book = _book(carol, side="buy")
        # then it shows what is left: a buyer holds fiat, not the asset
        assert book[offer.pk]["available"] == "0.40000000"

    def test_a_sell_offer_whose_real_depth_is_below_its_minimum_is_not_shown(
        self, alice, bob, carol
    ):
        # given alice holds 1 BTC; an offer of 0.8 with a 40,000 EUR minimum (0.5 BTC at 80,000)
        fund(alice, "BTC", "1")
        spender = make_offer(alice, amount="0.6", price="80000", max_fiat="60000")
        big = make_offer(alice, amount="0.8", price="80000", min_fiat="40000", max_fiat="64000")
        assert big.pk in _book(carol, side="sell")
        # when bob takes 0.6 from her other offer: she holds 0.3994 BTC, below 0.5
        escrow.trade_open(offer_id=spender.pk, taker=bob, amount="0.6")
        # then the big offer leaves the book and quick trade can't find it
        assert big.pk not in _book(carol, side="sell")
        assert not selectors.offer_book(side="sell", asset="BTC", fiat="EUR").filter(pk=big.pk)
        answer = client_for(carol).post(
            "/api/v1/match/",
            {"side": "buy", "asset": "BTC", "fiat": "EUR", "fiat_amount": "40000"},
            format="json",
        )
        assert answer.status_code == 404, answer.content

    def test_match_fits_the_amount_against_real_depth(self, alice, bob, carol):
        # given alice's 0.5 BTC offer at the best price, but she holds 0.1 BTC after a take;
        # carol's dearer offer holds what it says
        fund(alice, "BTC", "0.7")
        spender = make_offer(alice, amount="0.6", price="80000", max_fiat="60000")
        cheap = make_offer(alice, amount="0.5", price="79000")
        escrow.trade_open(offer_id=spender.pk, taker=bob, amount="0.6")
        fund(carol, "BTC", "1")
        dear = make_offer(carol, amount="0.5", price="81000")
        # when the book is asked for offers that fit 20,000 EUR
        fits = list(
            selectors.offer_book(side="sell", asset="BTC", fiat="EUR", fiat_amount=Decimal(20000))
        )
        # then only carol's is listed
        assert [o.pk for o in fits] == [dear.pk]
        assert cheap.pk in {o.pk for o in selectors.offer_book(side="sell", asset="BTC")}


class TestOpenOfferCap:
    def test_a_maker_has_at_most_the_tiers_number_of_open_offers(self, alice, settings):
        # given tier 0 may have 3 open offers
        settings.MAX_OPEN_OFFERS = {0: 3, 1: 5, 2: 10}
        for _ in range(3):
            make_offer(alice, side="buy", amount="0.1")
        # when alice posts a fourth
        with pytest.raises(ValidationFailed) as refused:
            make_offer(alice, side="buy", amount="0.1")
        # then it is refused with its own code
        assert refused.value.code == "too_many_offers"
        # and deleting one frees a place
        services.offer_delete(offer_id=alice.offers.first().pk, actor=alice)
        make_offer(alice, side="buy", amount="0.1")

    def test_the_cap_follows_the_tier(self, alice, settings):
        # given tier 1 may have 2 and tier 0 only 1
        settings.MAX_OPEN_OFFERS = {0: 1, 1: 2, 2: 10}
        set_tier(alice, 1)
        # when alice (tier 1) posts two, then a third
        make_offer(alice, side="buy", amount="0.1")
        make_offer(alice, side="buy", amount="0.1")
        # then the third is refused
        with pytest.raises(ValidationFailed):
            make_offer(alice, side="buy", amount="0.1")

    def test_the_probe_gets_no_sixty_offers_through_the_api(self, alice, settings):
        # given the default caps
        settings.MAX_OPEN_OFFERS = {0: 10, 1: 30, 2: 100}
        client = client_for(alice)
        body = {
            "side": "buy",
            "asset": "BTC",
            "fiat": "EUR",
            "price_type": "fixed",
            "price": "85000",
            "amount": "1",
            "min_fiat": "10",
            "max_fiat": "1000",
            "payment_methods": ["sepa"],
        }
        # when a 0-balance tier 0 account posts 60 buy offers
        codes = [client.post("/api/v1/offers/", body, format="json").status_code for _ in range(60)]
        # then 10 get in
        assert codes.count(201) == 10
        assert set(codes) == {201, 400}


class TestPriceProtection:
    @pytest.mark.parametrize("side", ["buy", "sell"])
    def test_a_fixed_price_far_from_the_index_is_refused(self, alice, side, settings):
        # given the index is 85,000 EUR/BTC and prices may stray 20% from it
        settings.PRICE_PROTECTION_PCT = 20
        fund(alice, "BTC", "1")
        # when alice offers at 999,999 EUR/BTC, or at 60,000
        for price in ("999999", "60000"):
            with pytest.raises(ValidationFailed) as refused:
                make_offer(alice, side=side, price=price, amount="0.1")
            # then it is refused naming price
            assert "price" in refused.value.fields
        # and 20% off either way is fine
        make_offer(alice, side=side, price="102000", amount="0.1")
        make_offer(alice, side=side, price="68000", amount="0.1")

    def test_an_edit_to_a_far_price_is_refused(self, alice, settings):
        # given an offer near the index
        settings.PRICE_PROTECTION_PCT = 20
        offer = make_offer(alice, side="buy", price="85000", amount="0.1")
        # when edited to 999,999 through the API
        answer = client_for(alice).patch(
            f"/api/v1/offers/{offer.pk}/", {"price": "999999"}, format="json"
        )
        # then refused naming price; the stored price is unchanged
        assert answer.status_code == 400, answer.content
        assert "price" in answer.json()["error"]["fields"]
        offer.refresh_from_db()
        assert offer.price == Decimal("85000")

    def test_without_an_index_a_fixed_price_is_the_makers(self, alice, settings):
        # given a pair without an index (BTC/NGN)
        settings.PRICE_PROTECTION_PCT = 20
        PriceIndex.objects.filter(asset__code="BTC", fiat__code="NGN").delete()
        # when a fixed price is set
        offer = make_offer(alice, side="buy", fiat="NGN", price="999999", amount="0.1")
        # then nothing to compare with: accepted
        assert offer.price == Decimal("999999")
