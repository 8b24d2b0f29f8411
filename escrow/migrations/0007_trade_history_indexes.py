"""The indexes a take reads through (escrow.models.Trade.Meta), built CONCURRENTLY: on a live
exchange escrow_trade is large and written on every take, and a plain CREATE INDEX would block
its writes for as long as the build takes."""

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("escrow", "0006_escrowevent_announced"),
        ("ledger", "0010_reserves_reconciliation_and_proofs"),
        ("marketplace", "0008_offer_allowed_countries_auto_reply"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="trade",
            index=models.Index(
                condition=models.Q(("state", "funded")), fields=["buyer"], name="trade_buyer_funded"
            ),
        ),
        AddIndexConcurrently(
            model_name="trade",
            index=models.Index(fields=["taker", "maker", "created_at"], name="trade_taker_maker_time"),
        ),
        AddIndexConcurrently(
            model_name="trade",
            index=models.Index(fields=["buyer", "created_at"], name="trade_buyer_time"),
        ),
        AddIndexConcurrently(
            model_name="trade",
            index=models.Index(fields=["seller", "created_at"], name="trade_seller_time"),
        ),
    ]
