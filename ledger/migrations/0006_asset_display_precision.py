"""Each asset's display precision: the places the browser shows and a fiat-bought quantity is
traded in. The seeded assets get BTC 8, ETH 6, USDT 2; others stay blank (the precision, at
most 8). Moderators change it per asset in the admin."""

import django.core.validators
from django.db import migrations, models


DISPLAY = {"BTC": 8, "ETH": 6, "USDT": 2}


def set_display_precision(apps, schema_editor):
    Asset = apps.get_model("ledger", "Asset")
    for code, places in DISPLAY.items():
        # Never above the asset's precision (the CHECK below): an asset seeded with fewer places
        # keeps them.
        for asset in Asset.objects.filter(code=code, display_precision__isnull=True):
            asset.display_precision = min(places, asset.precision)
            asset.save(update_fields=["display_precision"])


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0005_loan_disputes"),
    ]

    operations = [
        migrations.AddField(
            model_name="asset",
            name="display_precision",
            field=models.PositiveSmallIntegerField(
                blank=True,
                help_text="Decimal places shown in the browser and traded for a fiat amount; at most the precision. Blank: the precision, at most 8.",
                null=True,
                validators=[django.core.validators.MaxValueValidator(18)],
            ),
        ),
        migrations.AddConstraint(
            model_name="asset",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("display_precision__isnull", True),
                    ("display_precision__lte", models.F("precision")),
                    _connector="OR",
                ),
                name="asset_display_precision_fits",
            ),
        ),
        migrations.RunPython(set_display_precision, migrations.RunPython.noop),
    ]
