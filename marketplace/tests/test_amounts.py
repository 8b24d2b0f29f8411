"""Readable amounts and offers that can't be taken: the display precision of an asset, the one
amount filter that knows it, and offers whose remainder can't cover their minimum closing
themselves (at the take that makes it so, by the sweep, or by an edit), their maker told."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.template import Context, Template
from django.urls import reverse

from common.errors import NotFound, ValidationFailed
from common.templatetags.money import amount, amount_shown
from escrow import services as escrow
from ledger import selectors as ledger_selectors
from ledger.models import Asset
from marketplace import services
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer
from notifications.models import Notification

pytestmark = pytest.mark.django_db


def _render(value: object, asset: Asset) -> str:
    return Template("{% load money %}{{ v|amount:asset }}").render(
        Context({"v": value, "asset": asset})
    )


# --- display precision ---------------------------------------------------------------------


class TestDisplayPrecision:
    def test_the_seeded_assets_show_btc_8_eth_6_usdt_2(self, refdata):
        places = {a.code: a.display_places for a in Asset.objects.all()}
        assert places == {"BTC": 8, "ETH": 6, "USDT": 2}

    def test_blank_means_the_precision_capped_at_8(self, refdata):
        # given an asset added without a display precision
        sol = Asset.objects.create(code="SOL", name="Solana", precision=9)
        small = Asset.objects.create(code="XTS", name="Test", precision=4)
        # then
        assert (sol.display_places, small.display_places) == (8, 4)

    def test_never_more_than_the_precision(self, refdata):
        usdt = Asset.objects.get(code="USDT")
        usdt.display_precision = 7
        # the form's check names the field
        with pytest.raises(ValidationError) as err:
            usdt.full_clean()
        assert "display_precision" in err.value.message_dict
        # and the database refuses it whatever the code does
        with pytest.raises(IntegrityError), transaction.atomic():
            usdt.save(update_fields=["display_precision"])

    def test_the_admin_edits_it_per_asset(self, admin_client, refdata):
        eth = Asset.objects.get(code="ETH")
        page = admin_client.get(reverse("admin:ledger_asset_change", args=[eth.pk]))
        assert 'name="display_precision"' in page.content.decode()


# --- the amount filter -----------------------------------------------------------------------


class TestAmountFilter:
    def test_rounded_down_to_the_display_precision_exact_on_hover(self, refdata):
        eth = Asset.objects.get(code="ETH")
        html = _render(Decimal("0.038461538461538500"), eth)
        assert re.search(r">0\.038461<", html)  # down, not 0.038462
        assert 'title="0.0384615384615385"' in html
        assert 'data-exact="0.0384615384615385"' in html
        assert "amount-rounded" in html

    def test_an_exact_amount_shows_its_places_and_is_not_marked_rounded(self, refdata):
        eth, usdt = Asset.objects.get(code="ETH"), Asset.objects.get(code="USDT")
        assert ">1.000000<" in _render(Decimal(1), eth)
        assert "amount-rounded" not in _render(Decimal(1), eth)
        assert ">100.00<" in _render(Decimal("100"), usdt)
        # dust shows as zero, never as more than it is; its exact amount stays on hover
        html = _render(Decimal("0.000000004615384539"), eth)
        assert ">0.000000<" in html
        assert 'title="0.000000004615384539"' in html

    def test_never_an_exponent_and_nothing_for_none(self, refdata):
        btc = Asset.objects.get(code="BTC")
        assert ">0.00000001<" in _render(Decimal("1E-8"), btc)
        assert _render(None, btc) == ""

    def test_a_number_of_places_still_gives_the_exact_text(self, refdata):
        assert amount(Decimal("0.038461538461538500"), 18) == "0.0384615384615385"
        eth = Asset.objects.get(code="ETH")
        assert amount_shown(Decimal("2.9999999"), eth) == "2.999999"

    def test_the_markup_is_escaped_safe(self, refdata):
        btc = Asset.objects.get(code="BTC")
        assert _render("<b>", btc) == ""


# --- offers that can't be taken close themselves ---------------------------------------------


def _eth_offer(maker, **overrides):
    fund(maker, "ETH", "1")
    values = {"asset": "ETH", "price": "2600", "amount": "0.1", "min_fiat": "50"}
    values.update(overrides)
    return make_offer(maker, max_fiat="1000", **values)


class TestDustOffers:
    def test_the_take_that_leaves_less_than_the_minimum_closes_the_offer_and_tells_the_maker(
        self, alice, bob, django_capture_on_commit_callbacks
    ):
        # given 0.1 ETH at 2600 (260 EUR), 50 EUR minimum
        offer = _eth_offer(alice)
        # when bob takes 250 EUR: 0.096153 ETH, leaving 0.003847 ETH (10.00 EUR)
        with django_capture_on_commit_callbacks(execute=True):
            trade = escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="250")
        # then the offer closed in the same transaction
        offer.refresh_from_db()
        assert trade.amount == Decimal("0.096153")
        assert offer.available == Decimal("0.003847")
        assert not offer.is_active
        assert offer.closed_at is not None
        # it is out of the book and quick trade
        assert offer not in services_book()
        with pytest.raises(NotFound, match="No ETH offer fits"):
            escrow.trade_match_quote(
                taker=bob, side="buy", asset="ETH", fiat="EUR", fiat_amount="5"
            )
        # and alice was told, with a link to the offer
        note = Notification.objects.get(user=alice, kind=Notification.Kind.OFFER)
        assert note.offer_id == offer.pk
        assert "0.003847 ETH is left" in note.text
        assert "50.00 EUR" in note.text

    def test_the_api_says_when_the_platform_closed_it(self, client, alice, bob):
        from marketplace.api.serializers import OfferOut
        from marketplace.selectors import offer_get

        offer = _eth_offer(alice)
        escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="250")
        client.force_login(alice)
        body = client.get(f"/api/v1/offers/{offer.pk}/").json()
        assert body["is_active"] is False
        assert body["closed_at"] is not None
        out = OfferOut(context={})
        closed = offer_get(offer_id=offer.pk)
        assert out.to_representation(closed) == out.generic_representation(closed)

    def test_taking_a_closed_offer_says_too_little_is_left(self, alice, bob, carol):
        from common.errors import Conflict

        offer = _eth_offer(alice)
        escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="250")
        with pytest.raises(Conflict, match="too little is left") as err:
            escrow.trade_open(offer_id=offer.pk, taker=carol, amount="0.003847")
        assert err.value.code == "offer_exhausted"

    def test_a_take_that_leaves_enough_keeps_it_open(self, alice, bob):
        offer = _eth_offer(alice)
        escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="100")
        offer.refresh_from_db()
        assert offer.is_active
        assert offer.closed_at is None

    def test_the_sweep_closes_existing_ones_once(self, alice, django_capture_on_commit_callbacks):
        # given an offer that is already dust (left from before the rule: set directly)
        offer = _eth_offer(alice)
        Offer.objects.filter(pk=offer.pk).update(available=Decimal("0.000000004615384539"))
        healthy = _eth_offer(alice, amount="0.5")
        # when
        with django_capture_on_commit_callbacks(execute=True):
            closed = services.offers_close_dust()
        again = services.offers_close_dust()
        # then
        offer.refresh_from_db()
        healthy.refresh_from_db()
        assert (closed, again) == (1, 0)
        assert not offer.is_active
        assert offer.closed_at is not None
        assert healthy.is_active
        assert Notification.objects.filter(user=alice, offer=offer).count() == 1

    def test_resuming_is_refused_until_topped_up_then_an_edit_reopens_it(self, alice, bob):
        offer = _eth_offer(alice)
        escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="250")
        # resuming as it is: refused, naming the way out, nothing changed
        with pytest.raises(ValidationFailed, match="Top it up or lower the minimum"):
            services.offer_set_active(offer_id=offer.pk, actor=alice, active=True)
        offer.refresh_from_db()
        assert not offer.is_active
        # lowering the minimum reopens it
        services.offer_update(offer_id=offer.pk, actor=alice, min_fiat="5")
        offer.refresh_from_db()
        assert offer.is_active
        assert offer.closed_at is None

    def test_topping_it_up_reopens_it(self, alice, bob):
        offer = _eth_offer(alice)
        escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="250")
        # a total of 0.2: what is left becomes 0.2 - 0.096153
        services.offer_update(offer_id=offer.pk, actor=alice, amount="0.2")
        offer.refresh_from_db()
        assert offer.available == Decimal("0.103847")
        assert offer.is_active
        assert offer.closed_at is None

    def test_an_edit_raising_the_minimum_past_what_is_left_closes_it(self, alice):
        offer = _eth_offer(alice)
        services.offer_update(offer_id=offer.pk, actor=alice, min_fiat="300", max_fiat="1000")
        offer.refresh_from_db()
        assert not offer.is_active
        assert offer.closed_at is not None

    def test_the_closed_offer_page_and_my_offers_say_so(self, client, alice, bob):
        offer = _eth_offer(alice)
        escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="250")
        client.force_login(bob)
        page = client.get(reverse("offer_detail", args=[offer.pk])).content.decode()
        assert "This offer is closed" in page
        assert 'id="take-form"' not in page
        client.force_login(alice)
        mine = client.get(reverse("my_offers")).content.decode()
        assert f'data-testid="offer-closed-{offer.pk}"' in mine


def services_book() -> list[Offer]:
    from marketplace.selectors import offer_book

    return list(offer_book(asset="ETH", fiat="EUR"))


# --- wallet balances in fiat -------------------------------------------------------------------


class TestWalletValues:
    def test_balances_are_valued_at_the_index_in_eur(self, client, alice):
        # given 0.5 ETH at the 3000 EUR index and 0.01 BTC at 85000
        fund(alice, "ETH", "0.5")
        fund(alice, "BTC", "0.01")
        # when
        code, values = ledger_selectors.wallet_values(
            user=alice, wallets=ledger_selectors.wallet_list_for_user(user=alice)
        )
        # then
        by_code = {Asset.objects.get(pk=k).code: v for k, v in values.items()}
        assert code == "EUR"
        assert by_code["ETH"] == Decimal("1500.00")
        assert by_code["BTC"] == Decimal("850.00")
        client.force_login(alice)
        html = client.get(reverse("wallet")).content.decode()
        assert "≈ 1,500.00 EUR" in html
        assert "≈ <strong" in html
        assert "2,350.00" in html

    def test_the_user_picks_the_currency_and_it_is_kept(self, client, alice):
        # given 0.5 BTC and the index's BTC/USD price (92,000)
        fund(alice, "BTC", "0.5")
        client.force_login(alice)
        # when alice picks USD on the wallet page
        html = client.get(reverse("wallet"), {"in": "usd"}).content.decode()
        # then her balances are valued in USD, now and on her next visit
        shown = "≈ 46,000.00 USD"
        assert shown in html
        assert shown in client.get(reverse("wallet")).content.decode()
        assert '<option value="USD" selected>' in html
        # and a code the index doesn't know falls back to her own currency
        assert "EUR" in client.get(reverse("wallet"), {"in": "XYZ"}).content.decode()
