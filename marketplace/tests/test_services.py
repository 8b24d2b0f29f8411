"""Offers and taking them: the rules, and bad input that changes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.errors import Conflict, InsufficientFunds, NotFound, ValidationFailed
from escrow import services as escrow_services
from escrow.models import Trade
from ledger.models import LedgerAccount, Transfer
from ledger.selectors import balance_available
from marketplace import services
from marketplace.models import Offer
from marketplace.selectors import offer_book
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db


def _snapshot():
    return (
        list(
            LedgerAccount.objects.order_by("pk").values_list(
                "debits_pending", "debits_posted", "credits_pending", "credits_posted"
            )
        ),
        list(Offer.objects.order_by("pk").values_list("available", "is_active")),
        Trade.objects.count(),
        Transfer.objects.count(),
    )


class TestOfferCreate:
    def test_floating_offer_follows_the_index(self, alice):
        fund(alice, "BTC", "1")
        offer = make_offer(alice, price_type="floating", price=None, margin_percent="1.5")
        assert services.offer_effective_price(offer) == Decimal("86275.00")  # 85000 * 1.015
        services.price_index_set(asset_code="BTC", fiat_code="EUR", price="90000")
        assert services.offer_effective_price(offer) == Decimal("91350.00")

    def test_the_stored_price_the_book_sorts_by_follows_index_and_edits(self, alice, bob):
        """Offer.effective_price (the book's sort key) always equals offer_effective_price: on
        create, when the pair's index moves (one statement for all its floating offers, other
        pairs untouched), and when the maker edits the price or its type."""
        from marketplace.selectors import offer_book

        fund(alice, "BTC", "2")
        fund(alice, "ETH", "1")
        floating = make_offer(alice, price_type="floating", price=None, margin_percent="0.55")
        fixed = make_offer(alice, price="86000")
        other_pair = make_offer(
            alice, asset="ETH", price_type="floating", price=None, margin_percent="1"
        )

        def stored(offer):
            return Offer.objects.get(pk=offer.pk).effective_price

        def book():
            return [o.pk for o in offer_book(side="sell", asset="BTC", fiat="EUR")]

        assert stored(floating) == Decimal("85467.50")  # 85000 * 1.0055
        assert stored(fixed) == Decimal("86000")
        assert stored(other_pair) == Decimal("3030.00")
        assert book() == [floating.pk, fixed.pk]
        services.price_index_set(asset_code="BTC", fiat_code="EUR", price="86123.45")
        assert stored(floating) == Decimal("86597.13")  # 86597.128975: half up to cents
        assert stored(floating) == services.offer_effective_price(Offer.objects.get(pk=floating.pk))
        assert stored(fixed) == Decimal("86000")
        assert stored(other_pair) == Decimal("3030.00")
        assert book() == [fixed.pk, floating.pk]
        services.offer_update(offer_id=fixed.pk, actor=alice, price="87000")
        assert stored(fixed) == Decimal("87000")
        assert book() == [floating.pk, fixed.pk]
        services.offer_update(
            offer_id=fixed.pk, actor=alice, price_type="floating", margin_percent="-1"
        )
        assert stored(fixed) == Decimal("85262.22")  # 86123.45 * 0.99 = 85262.2155
        assert book() == [fixed.pk, floating.pk]

    def test_negative_margin(self, alice):
        fund(alice, "BTC", "1")
        offer = make_offer(alice, price_type="floating", price=None, margin_percent="-2")
        assert services.offer_effective_price(offer) == Decimal("83300.00")

    def test_sell_offer_larger_than_balance_is_refused(self, alice):
        fund(alice, "BTC", "0.1")
        with pytest.raises(ValidationFailed) as err:
            make_offer(alice, amount="0.2")
        assert "amount" in err.value.fields
        assert not Offer.objects.exists()

    def test_buy_offer_needs_no_balance(self, alice):
        offer = make_offer(alice, side="buy", amount="2")
        assert offer.available == Decimal("2")

    @pytest.mark.parametrize(
        ("override", "field"),
        [
            ({"amount": "0"}, "amount"),
            ({"amount": "-1"}, "amount"),
            ({"amount": "0.000000001"}, "amount"),  # BTC has 8 decimals
            ({"amount": "abc"}, "amount"),
            ({"amount": 0.1}, "amount"),  # floats are refused outright
            ({"asset": "DOGE"}, "asset"),
            ({"fiat": "XXX"}, "fiat"),
            ({"payment_methods": ["carrier-pigeon"]}, "payment_methods"),
            ({"payment_methods": []}, "payment_methods"),
            ({"payment_methods": ["sepa", "revolut", "wise", "zelle"]}, "payment_methods"),
            ({"payment_window_minutes": 4}, "payment_window_minutes"),
            ({"payment_window_minutes": 181}, "payment_window_minutes"),
            ({"min_fiat": "100", "max_fiat": "50"}, "max_fiat"),
            ({"min_fiat": "10.001"}, "min_fiat"),
            ({"price": "0"}, "price"),
            ({"price_type": "floating", "margin_percent": "80"}, "margin_percent"),
            ({"price_type": "floating", "margin_percent": None}, "margin_percent"),
            ({"price_type": "magic"}, "price_type"),
            ({"side": "hold"}, "side"),
        ],
    )
    def test_bad_input_names_the_field_and_changes_nothing(self, alice, override, field):
        fund(alice, "BTC", "1")
        before = _snapshot()
        with pytest.raises(ValidationFailed) as err:
            make_offer(alice, **override)
        assert field in err.value.fields, err.value.fields
        assert err.value.message
        assert _snapshot() == before


class TestOfferTake:
    def test_take_by_fiat_amount_rounds_the_asset_down(self, alice, bob):
        fund(alice, "BTC", "1")
        offer = make_offer(alice, price="85000")
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="1000")
        assert trade.amount == Decimal("0.01176470")  # 1000 / 85000, rounded down to 8 places
        assert trade.fiat_amount == Decimal("1000.00")
        assert trade.buyer == bob
        assert trade.seller == alice
        assert trade.escrow_hold.flags == Transfer.Flags.PENDING
        assert trade.escrow_hold.amount == trade.amount + trade.seller_fee
        assert balance_available(user=alice, asset_code="BTC") == Decimal(1) - trade.hold_amount

    def test_taking_a_buy_offer_holds_the_takers_funds(self, alice, bob):
        offer = make_offer(alice, side="buy", amount="1")
        fund(bob, "BTC", "0.5")
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.1")
        assert trade.seller == bob
        assert trade.buyer == alice
        assert balance_available(user=bob, asset_code="BTC") == Decimal("0.4") - trade.seller_fee

    def test_taker_without_funds_on_a_buy_offer(self, alice, bob):
        offer = make_offer(alice, side="buy", amount="1")
        before = _snapshot()
        with pytest.raises(InsufficientFunds, match="Your BTC balance"):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.1")
        assert _snapshot() == before

    def test_fees_use_maker_and_taker_rates(self, alice, bob, settings):
        settings.MAKER_FEE_RATE = Decimal("0.01")
        settings.TAKER_FEE_RATE = Decimal("0.02")
        fund(alice, "BTC", "1")
        offer = make_offer(alice)
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.1")
        assert trade.seller_fee == Decimal("0.001")  # alice is the maker
        assert trade.buyer_fee == Decimal("0.002")  # bob is the taker

    @pytest.mark.parametrize(
        ("kwargs", "error", "field"),
        [
            ({"amount": "0"}, ValidationFailed, "amount"),
            ({"amount": "-0.01"}, ValidationFailed, "amount"),
            ({"amount": "0.000000001"}, ValidationFailed, "amount"),
            ({"amount": "1e3"}, ValidationFailed, "amount"),  # 80,000,000 EUR: over the limit
            ({"fiat_amount": "5"}, ValidationFailed, "fiat_amount"),  # under min_fiat
            ({"fiat_amount": "1.001"}, ValidationFailed, "fiat_amount"),
            ({"amount": "0.01", "fiat_amount": "800"}, ValidationFailed, "amount"),
            ({}, ValidationFailed, "amount"),
            ({"amount": "0.01", "payment_method": "zelle"}, ValidationFailed, "payment_method"),
        ],
    )
    def test_bad_take_changes_nothing(self, alice, bob, kwargs, error, field):
        fund(alice, "BTC", "1")
        offer = make_offer(alice)
        before = _snapshot()
        with pytest.raises(error) as err:
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, **kwargs)
        assert field in err.value.fields, err.value.fields
        assert _snapshot() == before

    def test_own_offer(self, alice):
        fund(alice, "BTC", "1")
        offer = make_offer(alice)
        with pytest.raises(ValidationFailed, match="your own offer"):
            escrow_services.trade_open(offer_id=offer.pk, taker=alice, amount="0.01")

    def test_paused_offer(self, alice, bob):
        fund(alice, "BTC", "1")
        offer = make_offer(alice)
        services.offer_set_active(offer_id=offer.pk, actor=alice, active=False)
        with pytest.raises(Conflict, match="paused"):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        services.offer_set_active(offer_id=offer.pk, actor=alice, active=True)
        assert (
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01").state
            == "funded"
        )

    def test_deleted_or_unknown_offer(self, alice, bob):
        fund(alice, "BTC", "1")
        offer = make_offer(alice)
        services.offer_delete(offer_id=offer.pk, actor=alice)
        with pytest.raises(NotFound):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        with pytest.raises(NotFound):
            escrow_services.trade_open(offer_id=999999, taker=bob, amount="0.01")

    def test_more_than_available(self, alice, bob):
        fund(alice, "BTC", "1")
        offer = make_offer(alice, amount="0.01")
        with pytest.raises(Conflict, match=r"Only 0\.01000000 BTC is left"):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.02")

    def test_only_the_maker_edits(self, alice, bob):
        fund(alice, "BTC", "1")
        offer = make_offer(alice)
        with pytest.raises(NotFound):
            services.offer_update(offer_id=offer.pk, actor=bob, price="1")
        updated = services.offer_update(offer_id=offer.pk, actor=alice, price="81000", amount="0.6")
        assert updated.price == Decimal("81000")
        assert updated.available == Decimal("0.6")


class TestBookAndMatch:
    def test_book_sorted_best_price_first_for_the_taker(self, alice, bob, carol):
        fund(alice, "BTC", "1")
        fund(carol, "BTC", "1")
        cheap = make_offer(alice, price="84000")
        dear = make_offer(carol, price="86000")
        floating = make_offer(
            carol, price_type="floating", price=None, margin_percent="0", amount="0.1"
        )
        assert [o.pk for o in offer_book(side="sell", asset="BTC", fiat="EUR")] == [
            cheap.pk,
            floating.pk,
            dear.pk,
        ]
        low_bid = make_offer(alice, side="buy", price="80000")
        high_bid = make_offer(carol, side="buy", price="82000")
        assert [o.pk for o in offer_book(side="buy", asset="BTC", fiat="EUR")] == [
            high_bid.pk,
            low_bid.pk,
        ]

    def test_book_filters(self, alice, carol):
        fund(alice, "BTC", "1")
        fund(carol, "BTC", "1")
        sepa = make_offer(alice, payment_methods=["sepa"], min_fiat="10", max_fiat="500")
        revolut = make_offer(carol, payment_methods=["revolut"], min_fiat="600", max_fiat="5000")
        assert [o.pk for o in offer_book(side="sell", payment_method="revolut")] == [revolut.pk]
        assert [o.pk for o in offer_book(side="sell", fiat_amount=Decimal("100"))] == [sepa.pk]
        assert list(offer_book(side="sell", fiat="USD")) == []

    def test_match_takes_the_best_fitting_offer(self, alice, bob, carol):
        fund(alice, "BTC", "1")
        fund(carol, "BTC", "1")
        make_offer(alice, price="84000", max_fiat="100")
        fits = make_offer(carol, price="85000")
        trade = escrow_services.trade_match(
            taker=bob, side="buy", asset="BTC", fiat="EUR", fiat_amount="1000"
        )
        assert trade.offer_id == fits.pk

    def test_match_with_nothing_fitting(self, bob, refdata):
        with pytest.raises(NotFound, match="No BTC offer fits"):
            escrow_services.trade_match(
                taker=bob, side="buy", asset="BTC", fiat="EUR", fiat_amount="1000"
            )


def test_a_moderator_editing_the_index_in_the_admin_moves_the_floating_offers(admin_client, alice):
    from marketplace.models import PriceIndex

    fund(alice, "BTC", "1")
    offer = make_offer(alice, price_type="floating", price=None, margin_percent="2")
    row = PriceIndex.objects.get(asset__code="BTC", fiat__code="EUR")
    response = admin_client.post(
        f"/admin/marketplace/priceindex/{row.pk}/change/",
        {"asset": row.asset_id, "fiat": row.fiat_id, "price": "90000", "source": "manual"},
    )
    assert response.status_code == 302, response.content
    row.refresh_from_db()
    assert (row.price, row.source) == (Decimal("90000"), "admin")
    assert Offer.objects.get(pk=offer.pk).effective_price == Decimal("91800.00")


def test_price_listeners_hear_a_price_move_on_commit(refdata, django_capture_on_commit_callbacks):
    # given a listener on the price hook
    heard: list[tuple[str, Decimal]] = []
    services.price_listeners.append(lambda row: heard.append((row.asset.code, row.price)))
    try:
        # when a price index is set
        with django_capture_on_commit_callbacks() as callbacks:
            services.price_index_set(asset_code="ETH", fiat_code="EUR", price="2500")
        # then it is told only once the move commits, with the changed row
        assert heard == []
        for callback in callbacks:
            callback()
    finally:
        services.price_listeners.pop()
    assert heard == [("ETH", Decimal("2500"))]
