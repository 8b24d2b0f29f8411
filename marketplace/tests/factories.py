"""Reference data and ready-made offers and trades, built through the services (never by hand-
writing balances), so every fixture is a state the product can really be in."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import factory

from escrow import services as escrow_services
from escrow.models import Trade
from ledger import services as ledger
from ledger.models import Asset
from marketplace import services
from marketplace.models import FiatCurrency, PaymentMethod, PriceIndex
from marketplace.services.reference import fiat_currencies_sync, payment_methods_sync

ASSETS = {"BTC": ("Bitcoin", 8), "ETH": ("Ether", 18), "USDT": ("Tether USD", 6)}
# What the ledger's display-precision migration sets for the seeded assets.
DISPLAY_PRECISION = {"BTC": 8, "ETH": 6, "USDT": 2}
FIATS = {"EUR": "Euro", "USD": "US dollar", "NGN": "Nigerian naira"}
METHODS = {"sepa": "SEPA transfer", "revolut": "Revolut", "wise": "Wise", "zelle": "Zelle"}
PRICES = {
    ("BTC", "EUR"): "85000",
    ("ETH", "EUR"): "3000",
    ("USDT", "EUR"): "0.92",
    ("BTC", "USD"): "92000",
}


class AssetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Asset
        django_get_or_create = ("code",)

    code = "BTC"
    name = factory.LazyAttribute(lambda a: ASSETS.get(a.code, (a.code, 8))[0])
    precision = factory.LazyAttribute(lambda a: ASSETS.get(a.code, (a.code, 8))[1])
    display_precision = factory.LazyAttribute(lambda a: DISPLAY_PRECISION.get(a.code))


def reference_data() -> None:
    """What the seed migrations create; transactional tests flush it, so tests make it again:
    the assets, every ISO currency and the payment-method catalogue (through the migrations'
    own sync), and a few prices."""
    for code in ASSETS:
        AssetFactory(code=code)
    fiat_currencies_sync()
    payment_methods_sync()
    for code, name in FIATS.items():
        FiatCurrency.objects.get_or_create(code=code, defaults={"name": name})
    for code, name in METHODS.items():
        PaymentMethod.objects.get_or_create(code=code, defaults={"name": name})
    for (asset, fiat), price in PRICES.items():
        PriceIndex.objects.get_or_create(
            asset=Asset.objects.get(code=asset),
            fiat=FiatCurrency.objects.get(code=fiat),
            defaults={"price": Decimal(price)},
        )


def fund(user: Any, asset: str = "BTC", amount: str = "1") -> None:
    ledger.deposit_credit(user=user, asset_code=asset, amount=amount, reference="test", actor=None)


def make_offer(maker: Any, **overrides: Any):
    values: dict[str, Any] = {
        "side": "sell",
        "asset": "BTC",
        "fiat": "EUR",
        "price_type": "fixed",
        "price": "80000",
        "amount": "0.5",
        "min_fiat": "10",
        "max_fiat": "40000",
        "payment_methods": ["sepa"],
        "payment_window_minutes": 30,
    }
    values.update(overrides)
    return services.offer_create(maker=maker, **values)


def make_trade(
    seller: Any, buyer: Any, *, amount: str = "0.01", fund_seller: bool = True, **offer
) -> Trade:
    """A funded trade on a fresh sell offer of `seller`, taken by `buyer`."""
    if fund_seller:
        fund(seller, offer.get("asset", "BTC"), "1")
    created = make_offer(seller, **offer)
    return escrow_services.trade_open(offer_id=created.pk, taker=buyer, amount=amount)
