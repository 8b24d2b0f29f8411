"""Findings 5 and 6: wash trading with dust trades and zero fees, and griefing a seller with
trades that are never paid."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import F
from django.utils import timezone

from accounts.tests.factories import UserFactory
from common.errors import Conflict, ValidationFailed
from escrow import services
from escrow.models import Trade, TradeVolumeDay
from escrow.selectors.stats import (
    trade_volume_eur,
    trade_volume_eur_recount,
    volume_day,
)
from ledger.models import Asset
from marketplace.models import FiatCurrency, Offer, PriceIndex
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db

S = Trade.State


def _nothing_opened(offer: Offer) -> None:
    offer_now = Offer.objects.get(pk=offer.pk)
    assert offer_now.available == offer.available
    assert not Trade.objects.filter(offer=offer).exists()


# --- finding 5: wash trading ----------------------------------------------------------------


class TestMinimumTradeSize:
    def test_a_dust_trade_is_refused_naming_the_amount(self, alice, bob, settings):
        # given a sell offer that would take any size, and a 10 EUR minimum trade
        settings.MIN_TRADE_EUR = Decimal(10)
        fund(alice, "BTC", "1")
        offer = make_offer(alice, min_fiat="0.01", max_fiat="1000")
        # when bob takes 0.00000499 BTC (0.40 EUR)
        with pytest.raises(ValidationFailed) as refused:
            services.trade_open(offer_id=offer.pk, taker=bob, amount="0.00000499")
        # then it is refused naming amount; nothing opened
        assert refused.value.code == "below_minimum"
        assert "amount" in refused.value.fields
        _nothing_opened(offer)

    def test_by_fiat_amount_the_error_names_fiat_amount(self, alice, bob, settings):
        # given the same
        settings.MIN_TRADE_EUR = Decimal(10)
        fund(alice, "BTC", "1")
        offer = make_offer(alice, min_fiat="0.01", max_fiat="1000")
        # when bob asks for 0.30 EUR's worth
        with pytest.raises(ValidationFailed) as refused:
            services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="0.30")
        # then the error names fiat_amount
        assert "fiat_amount" in refused.value.fields
        # and 10 EUR is enough
        trade = services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="10")
        assert trade.fiat_amount == Decimal("10")

    def test_other_fiats_are_valued_in_eur(self, alice, bob, settings):
        # given a USD offer; the BTC/EUR index is 85,000
        settings.MIN_TRADE_EUR = Decimal(10)
        fund(alice, "BTC", "1")
        offer = make_offer(alice, fiat="USD", price="92000", min_fiat="0.01", max_fiat="1000")
        # when bob takes 0.0001 BTC (9.20 USD, 8.50 EUR)
        with pytest.raises(ValidationFailed):
            services.trade_open(offer_id=offer.pk, taker=bob, amount="0.0001")
        # then refused; 0.00012 BTC (10.20 EUR) is taken
        services.trade_open(offer_id=offer.pk, taker=bob, amount="0.00012")


class TestFeesNeverRoundToZero:
    def test_a_tiny_trade_pays_at_least_one_unit_each_side(self, alice, bob, settings):
        # given no minimum trade size (to reach the rounding), the default rates
        settings.MIN_TRADE_EUR = Decimal(0)
        settings.MAKER_FEE_RATE = Decimal("0.001")
        settings.TAKER_FEE_RATE = Decimal("0.002")
        fund(alice, "BTC", "1")
        offer = make_offer(alice, min_fiat="0.01", max_fiat="1000")
        # when bob takes 0.00000499 BTC: 0.1% and 0.2% of it are below one satoshi
        trade = services.trade_open(offer_id=offer.pk, taker=bob, amount="0.00000499")
        # then each side pays one satoshi, not nothing
        assert trade.seller_fee == Decimal("0.00000001")
        assert trade.buyer_fee == Decimal("0.00000001")

    def test_larger_fees_are_rounded_down_as_before(self, alice, bob, settings):
        # given the default rates
        settings.MAKER_FEE_RATE = Decimal("0.001")
        settings.TAKER_FEE_RATE = Decimal("0.002")
        fund(alice, "BTC", "1")
        offer = make_offer(alice)
        # when bob takes 0.012345678 -> 0.01234567 BTC
        trade = services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01234567")
        # then the fees are the rates, rounded down
        assert trade.seller_fee == Decimal("0.00001234")
        assert trade.buyer_fee == Decimal("0.00002469")

    def test_a_zero_rate_stays_zero(self, alice, bob, settings):
        # given no fees
        settings.MIN_TRADE_EUR = Decimal(0)
        settings.MAKER_FEE_RATE = Decimal(0)
        settings.TAKER_FEE_RATE = Decimal(0)
        fund(alice, "BTC", "1")
        offer = make_offer(alice, min_fiat="0.01", max_fiat="1000")
        # when a tiny trade opens
        trade = services.trade_open(offer_id=offer.pk, taker=bob, amount="0.00000499")
        # then no fee
        assert (trade.seller_fee, trade.buyer_fee) == (Decimal(0), Decimal(0))


# --- finding 6: griefing --------------------------------------------------------------------


def _sellers(n: int) -> list[Offer]:
    offers = []
    for i in range(n):
        seller = UserFactory(username=f"seller{i}")
        fund(seller, "BTC", "1")
        offers.append(make_offer(seller, payment_window_minutes=180))
    return offers


class TestUnpaidTrades:
    def test_a_buyer_holds_at_most_the_limit_of_unpaid_trades(self, bob, settings):
        # given bob may hold 2 unpaid trades, and three sellers
        settings.MAX_UNPAID_TRADES = 2
        first, second, third = _sellers(3)
        t1 = services.trade_open(offer_id=first.pk, taker=bob, fiat_amount="1000")
        services.trade_open(offer_id=second.pk, taker=bob, fiat_amount="1000")
        # when he takes a third without paying either
        with pytest.raises(Conflict) as refused:
            services.trade_open(offer_id=third.pk, taker=bob, fiat_amount="1000")
        # then it is refused and nothing is held
        assert refused.value.code == "too_many_unpaid_trades"
        _nothing_opened(third)
        # and once he pays one, he may take again
        services.trade_mark_paid(trade_id=t1.pk, actor=bob)
        services.trade_open(offer_id=third.pk, taker=bob, fiat_amount="1000")

    def test_cancelled_and_expired_trades_free_the_place(self, bob, settings):
        # given bob at his limit of 1
        settings.MAX_UNPAID_TRADES = 1
        first, second = _sellers(2)
        trade = services.trade_open(offer_id=first.pk, taker=bob, fiat_amount="1000")
        # when he cancels it
        services.trade_cancel(trade_id=trade.pk, actor=bob)
        # then he may take another
        services.trade_open(offer_id=second.pk, taker=bob, fiat_amount="1000")

    def test_a_taker_who_sells_is_not_limited(self, alice, bob, settings):
        # given alice buys; bob sells into her offer three times (alice pays, not bob)
        settings.MAX_UNPAID_TRADES = 2
        fund(bob, "BTC", "1")
        offer = make_offer(alice, side="buy", amount="0.5")
        # when bob takes it three times
        for _ in range(3):
            services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        # then all three opened (the limit is on takers who owe the payment)
        assert Trade.objects.filter(offer=offer, state=S.FUNDED).count() == 3


class TestVolumeLimits:
    def test_cancelled_and_expired_trades_do_not_count(self, alice, bob, carol):
        # given alice sells to bob and to carol, 1,000 EUR each
        fund(alice, "BTC", "1")
        offer = make_offer(alice, price="85000", payment_window_minutes=5)
        one = services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="1000")
        two = services.trade_open(offer_id=offer.pk, taker=carol, fiat_amount="1000")
        volumes = trade_volume_eur(user_ids=[alice.pk, bob.pk, carol.pk])
        assert volumes == {alice.pk: Decimal(2000), bob.pk: Decimal(1000), carol.pk: Decimal(1000)}
        # when bob cancels and carol's window runs out
        services.trade_cancel(trade_id=one.pk, actor=bob)
        Trade.objects.filter(pk=two.pk).update(payment_deadline=timezone.now())
        services.escrow_expire(trade_id=two.pk)
        # then neither counts against anyone's limit
        volumes = trade_volume_eur(user_ids=[alice.pk, bob.pk, carol.pk])
        assert volumes == {alice.pk: Decimal(0), bob.pk: Decimal(0), carol.pk: Decimal(0)}

    def test_each_trade_counts_at_its_eur_value_when_it_opened_for_both_parties(
        self, alice, bob, carol
    ):
        # given one trade older than the 30-day window, which no longer counts
        old = make_trade(carol, bob, amount="0.01", price="85000")
        month_ago = timezone.now() - timedelta(days=31)
        Trade.objects.filter(pk=old.pk).update(created_at=month_ago)
        TradeVolumeDay.objects.update(day=volume_day(month_ago))
        # and trades valued every way trade_value_eur values them, at the index prices of when
        # each opened: in EUR; in USD at the EUR index; with no EUR index, at the USD index;
        # with neither, at the fiat amount
        eur = make_trade(alice, bob, amount="0.01", price="85000")
        usd = make_trade(alice, bob, amount="0.02", fiat="USD", price="92000")
        PriceIndex.objects.filter(asset__code="ETH", fiat__code="EUR").delete()
        PriceIndex.objects.update_or_create(
            asset=Asset.objects.get(code="ETH"),
            fiat=FiatCurrency.objects.get(code="USD"),
            defaults={"price": Decimal("3200")},
        )
        eth_usd = make_trade(carol, bob, amount="0.5", asset="ETH", fiat="USD", price="3300")
        fund(carol, "USDT", "500")
        offer = make_offer(carol, asset="USDT", fiat="GBP", price="0.8", amount="200")
        PriceIndex.objects.filter(asset__code="USDT").delete()
        usdt_gbp = services.trade_open(offer_id=offer.pk, taker=alice, amount="100")
        # when the prices move after they opened, and the three parties' volumes are read
        PriceIndex.objects.update(price=F("price") * 2)
        volumes = trade_volume_eur(user_ids=[alice.pk, bob.pk, carol.pk])

        # then each trade counts once for each of its parties, at its value when it opened
        def value(trade: Trade) -> Decimal:
            trade.refresh_from_db()
            assert trade.value_eur is not None
            return trade.value_eur

        assert value(usd) == (Decimal("0.02") * Decimal("85000")).quantize(Decimal("0.01"))
        assert value(eth_usd) == Decimal("1600.00")  # 0.5 ETH at the USD index, 1:1
        assert value(usdt_gbp) == Decimal("80.00")  # no index: the fiat amount
        cent = Decimal("0.01")
        assert volumes == {
            alice.pk: (value(eur) + value(usd) + value(usdt_gbp)).quantize(cent),
            bob.pk: (value(eur) + value(usd) + value(eth_usd)).quantize(cent),
            carol.pk: (value(eth_usd) + value(usdt_gbp)).quantize(cent),
        }
        assert volumes == trade_volume_eur_recount(user_ids=[alice.pk, bob.pk, carol.pk])

    def test_griefers_hold_a_sellers_limit_only_until_their_trades_expire(self, alice, settings):
        # given alice may trade 2,000 EUR in 30 days; her 180-minute offer
        settings.KYC_LIMITS_EUR = {
            0: {"per_trade": "1000", "per_30_days": "2000"},
            1: {"per_trade": "10000", "per_30_days": "50000"},
            2: {"per_trade": "100000", "per_30_days": "1000000"},
        }
        fund(alice, "BTC", "1")
        offer = make_offer(alice, price="85000", payment_window_minutes=180)
        griefers = [UserFactory(username=f"griefer{i}") for i in range(2)]
        grief = [
            services.trade_open(offer_id=offer.pk, taker=g, fiat_amount="1000") for g in griefers
        ]
        honest = UserFactory(username="honest")
        # while the griefers' trades are funded, they count (they may still be paid)
        with pytest.raises(Conflict) as refused:
            services.trade_open(offer_id=offer.pk, taker=honest, fiat_amount="1000")
        assert refused.value.code == "counterparty_limit"
        # when their windows run out
        Trade.objects.filter(pk__in=[t.pk for t in grief]).update(payment_deadline=timezone.now())
        assert services.trades_expire_overdue() == 2
        # then alice's limit is hers again
        services.trade_open(offer_id=offer.pk, taker=honest, fiat_amount="1000")


class TestTakesPerMaker:
    def test_a_taker_opens_at_most_the_limit_against_one_maker_per_minute(
        self, alice, bob, carol, settings
    ):
        # given at most 2 takes per maker per minute
        settings.TAKES_PER_MAKER_PER_MINUTE = 2
        settings.MAX_UNPAID_TRADES = 100
        fund(alice, "BTC", "1")
        fund(carol, "BTC", "1")
        offer = make_offer(alice)
        other = make_offer(carol)
        for _ in range(2):
            services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        # when bob takes alice's offer a third time within the minute
        with pytest.raises(Conflict) as refused:
            services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        # then it is refused as rate limited, and nothing is held
        assert refused.value.code == "rate_limited"
        assert Trade.objects.filter(offer=offer).count() == 2
        # another maker's offer is still open to him
        services.trade_open(offer_id=other.pk, taker=bob, amount="0.01")
        # and a minute later alice's is again
        Trade.objects.filter(offer=offer).update(created_at=timezone.now() - timedelta(seconds=61))
        services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")

    def test_trades_cancelled_count_too(self, alice, bob, settings):
        # given a limit of 1 and one take cancelled at once
        settings.TAKES_PER_MAKER_PER_MINUTE = 1
        fund(alice, "BTC", "1")
        offer = make_offer(alice)
        trade = services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        services.trade_cancel(trade_id=trade.pk, actor=bob)
        # when bob takes again at once
        with pytest.raises(Conflict) as refused:
            services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        # then refused: take-and-cancel is how an offer is churned
        assert refused.value.code == "rate_limited"
