"""Seed fiat currencies, payment methods and a starting price index (the assets come from the
ledger's own migration). Moderators add more in the admin; the price index is kept current by
moderators or a task."""

from decimal import Decimal

from django.db import migrations

FIATS = [("EUR", "Euro"), ("USD", "US dollar"), ("GBP", "Pound sterling"), ("NGN", "Nigerian naira")]
METHODS = [
    ("sepa", "SEPA transfer"),
    ("sepa-instant", "SEPA Instant"),
    ("revolut", "Revolut"),
    ("wise", "Wise"),
    ("bank-transfer", "Bank transfer"),
    ("zelle", "Zelle"),
    ("faster-payments", "Faster Payments"),
    ("opay", "OPay"),
]
PRICES = {
    ("BTC", "EUR"): "85000",
    ("BTC", "USD"): "92000",
    ("BTC", "GBP"): "72000",
    ("BTC", "NGN"): "140000000",
    ("ETH", "EUR"): "3000",
    ("ETH", "USD"): "3250",
    ("ETH", "GBP"): "2550",
    ("ETH", "NGN"): "4900000",
    ("USDT", "EUR"): "0.92",
    ("USDT", "USD"): "1.00",
    ("USDT", "GBP"): "0.79",
    ("USDT", "NGN"): "1520",
}


def seed(apps, schema_editor):
    Asset = apps.get_model("ledger", "Asset")
    Fiat = apps.get_model("marketplace", "FiatCurrency")
    Method = apps.get_model("marketplace", "PaymentMethod")
    Price = apps.get_model("marketplace", "PriceIndex")
    assets = {asset.code: asset for asset in Asset.objects.all()}
    fiats = {code: Fiat.objects.get_or_create(code=code, defaults={"name": name})[0] for code, name in FIATS}
    for code, name in METHODS:
        Method.objects.get_or_create(code=code, defaults={"name": name})
    for (asset, fiat), price in PRICES.items():
        Price.objects.get_or_create(asset=assets[asset], fiat=fiats[fiat], defaults={"price": Decimal(price), "source": "seed"})


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0001_initial"), ("ledger", "0002_assets_append_only")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
