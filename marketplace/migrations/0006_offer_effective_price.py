"""Offer.effective_price: the book's sort key as a column (kept by the services), filled in for
the offers already there, and the book's index on it."""

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import migrations, models


def fill_effective_price(apps, schema_editor):
    Offer = apps.get_model("marketplace", "Offer")
    PriceIndex = apps.get_model("marketplace", "PriceIndex")
    index = {(p.asset_id, p.fiat_id): p.price for p in PriceIndex.objects.all()}
    changed = []
    for offer in Offer.objects.select_related("fiat").iterator(chunk_size=2000):
        if offer.price_type == "fixed":
            offer.effective_price = offer.price
        else:
            base = index.get((offer.asset_id, offer.fiat_id))
            offer.effective_price = (
                None
                if base is None
                else (base * (1 + (offer.margin_percent or 0) / Decimal(100))).quantize(
                    Decimal(1).scaleb(-offer.fiat.precision), rounding=ROUND_HALF_UP
                )
            )
        changed.append(offer)
        if len(changed) >= 2000:
            Offer.objects.bulk_update(changed, ["effective_price"])
            changed = []
    Offer.objects.bulk_update(changed, ["effective_price"])


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0005_alter_trademessage_attachment"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(model_name="offer", name="offer_book"),
        migrations.AddField(
            model_name="offer",
            name="effective_price",
            field=models.DecimalField(blank=True, decimal_places=8, max_digits=24, null=True),
        ),
        migrations.RunPython(fill_effective_price, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="offer",
            index=models.Index(
                condition=models.Q(("is_active", True), ("is_deleted", False)),
                fields=["asset", "fiat", "side", "effective_price", "id"],
                name="offer_book_by_price",
            ),
        ),
    ]
