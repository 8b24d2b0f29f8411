"""What a take comes to before committing (trade_quote), and the quantization of a quantity
bought for a fiat amount: the breakdown the taker sees is what the trade opens with."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from common.errors import ValidationFailed
from escrow import services as escrow
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db


def _eth_offer(maker, **overrides):
    fund(maker, "ETH", "2")
    values = {"asset": "ETH", "price": "2600", "amount": "1", "min_fiat": "10", "max_fiat": "2000"}
    values.update(overrides)
    return make_offer(maker, **values)


class TestQuantization:
    def test_a_fiat_amount_buys_a_quantity_at_the_display_precision(self, alice, bob):
        # given ETH at 2600 EUR (display precision 6)
        offer = _eth_offer(alice)
        # when bob pays 100 EUR: 0.0384615384615... ETH
        trade = escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="100")
        # then the quantity is rounded down to 6 places; the fiat stays what bob typed
        assert trade.amount == Decimal("0.038461")
        assert trade.fiat_amount == Decimal("100.00")
        assert trade.price == Decimal("2600")
        # amount x price <= fiat < (amount + one display unit) x price
        assert trade.amount * trade.price <= trade.fiat_amount
        assert (trade.amount + Decimal("0.000001")) * trade.price > trade.fiat_amount

    def test_an_asset_amount_is_taken_as_given(self, alice, bob):
        offer = _eth_offer(alice)
        trade = escrow.trade_open(offer_id=offer.pk, taker=bob, amount="0.0384615384615385")
        assert trade.amount == Decimal("0.0384615384615385")

    def test_a_fiat_amount_below_one_display_unit_is_refused_naming_the_field(self, alice):
        # given USDT (2 places shown and traded) at 1500 NGN: 1 NGN buys 0.000666 USDT
        fund(alice, "USDT", "100")
        offer = make_offer(
            alice, asset="USDT", fiat="NGN", price="1500", amount="50", min_fiat="1",
            max_fiat="50000",
        )  # fmt: skip
        with pytest.raises(ValidationFailed) as err:
            escrow.trade_quote(offer=offer, fiat_amount="1")
        assert "fiat_amount" in err.value.fields
        assert "less than 0.01 USDT" in err.value.message

    def test_usdt_trades_in_cents(self, alice, bob):
        fund(alice, "USDT", "1000")
        offer = make_offer(
            alice, asset="USDT", price="0.93", amount="500", min_fiat="10", max_fiat="400"
        )
        trade = escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="100")
        assert trade.amount == Decimal("107.52")  # 107.526881... rounded down


class TestQuote:
    def test_the_quote_is_what_the_trade_opens_with(self, alice, bob):
        offer = _eth_offer(alice)
        quote = escrow.trade_quote(offer=offer, fiat_amount="100")
        trade = escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="100")
        assert (quote.amount, quote.fiat_amount, quote.price) == (
            trade.amount,
            trade.fiat_amount,
            trade.price,
        )
        assert (quote.seller_fee, quote.buyer_fee) == (trade.seller_fee, trade.buyer_fee)
        assert quote.hold_amount == trade.hold_amount
        assert quote.buyer_receives == trade.buyer_receives

    def test_a_buy_offer_charges_the_maker_rate_to_its_buyer(self, alice, bob, settings):
        offer = make_offer(alice, side="buy", price="80000", amount="0.5")
        quote = escrow.trade_quote(offer=offer, amount="0.01")
        assert quote.buyer_fee == Decimal("0.01") * settings.MAKER_FEE_RATE
        assert quote.seller_fee == Decimal("0.01") * settings.TAKER_FEE_RATE

    def test_bad_input_names_the_field(self, alice):
        offer = _eth_offer(alice)
        with pytest.raises(ValidationFailed) as err:
            escrow.trade_quote(offer=offer, fiat_amount="5000")
        assert "fiat_amount" in err.value.fields
        with pytest.raises(ValidationFailed):
            escrow.trade_quote(offer=offer)

    def test_quick_trade_quotes_the_best_offer(self, alice, bob, carol):
        _eth_offer(alice, price="2650")
        best = _eth_offer(carol, price="2600")
        quote = escrow.trade_match_quote(
            taker=bob, side="buy", asset="ETH", fiat="EUR", fiat_amount="100"
        )
        assert quote.offer.pk == best.pk
        assert quote.amount == Decimal("0.038461")


class TestPreviewViews:
    def test_the_take_form_partial_shows_the_breakdown(self, client, alice, bob):
        offer = _eth_offer(alice)
        quote = escrow.trade_quote(offer=offer, fiat_amount="100")
        client.force_login(bob)
        page = client.get(reverse("offer_quote", args=[offer.pk]), {"fiat_amount": "100"})
        html = page.content.decode()
        assert page.status_code == 200
        assert 'data-testid="fee-breakdown"' in html
        for value in (quote.buyer_fee, quote.buyer_receives, quote.hold_amount):
            assert f">{value.quantize(Decimal('0.000001'), rounding='ROUND_DOWN')}<" in html
        assert "2,600.00" in html
        assert "100.00" in html

    def test_a_bad_amount_is_part_of_the_preview_not_a_failed_request(self, client, alice, bob):
        offer = _eth_offer(alice)
        client.force_login(bob)
        page = client.get(reverse("offer_quote", args=[offer.pk]), {"fiat_amount": "1e5"})
        assert page.status_code == 200
        assert 'data-testid="preview-error"' in page.content.decode()
        empty = client.get(reverse("offer_quote", args=[offer.pk]))
        assert empty.content.decode().strip() == ""

    def test_quick_trade_partial(self, client, alice, bob):
        _eth_offer(alice)
        client.force_login(bob)
        page = client.get(
            reverse("quick_quote"),
            {"side": "buy", "asset": "ETH", "fiat": "EUR", "fiat_amount": "100"},
        )
        html = page.content.decode()
        assert 'data-testid="preview-offer"' in html
        assert 'data-testid="fee-breakdown"' in html
