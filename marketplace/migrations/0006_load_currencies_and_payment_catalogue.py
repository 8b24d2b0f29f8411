"""Load every ISO 4217 currency with its minor units (CLDR, through Babel) and the payment-method
catalogue, through the same idempotent sync as `manage.py sync_reference_data`. Only a few
currencies are enabled (marketplace.currencies.ENABLED_BY_DEFAULT); moderators enable others in
the admin. Reversing leaves the rows: offers and trades may already name them."""

from django.db import migrations


def load(apps, schema_editor):
    from marketplace.services.reference import fiat_currencies_sync, payment_methods_sync

    fiat_currencies_sync(model=apps.get_model("marketplace", "FiatCurrency"))
    payment_methods_sync(model=apps.get_model("marketplace", "PaymentMethod"))


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0005_fiat_minor_units_and_method_regions")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
