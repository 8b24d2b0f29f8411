"""The running 30-day volumes (escrow.models.TradeVolumeDay, Trade.value_eur), filled from the
trades of the last 31 days (the longest the limit window reads), each valued as the take valued
it (escrow.selectors.trade_value_eur at the index prices of the day this runs)."""

import django.db.models.deletion
from decimal import Decimal
from django.conf import settings
from django.db import migrations, models


# Each trade of the window valued (in EUR: its fiat amount; else its amount at the asset's EUR
# index, else at its USD index taken 1:1, else its fiat amount 1:1), then both parties' rows of
# each UTC day summed from the trades that count.
BACKFILL_SQL = """
UPDATE escrow_trade t SET value_eur = CASE
    WHEN f.code = 'EUR' THEN t.fiat_amount
    ELSE COALESCE(
        ROUND(t.amount * (
            SELECT p.price FROM marketplace_priceindex p
            JOIN marketplace_fiatcurrency pf ON pf.id = p.fiat_id
            WHERE p.asset_id = t.asset_id AND pf.code = 'EUR' LIMIT 1
        ), 2),
        ROUND(t.amount * (
            SELECT p.price FROM marketplace_priceindex p
            JOIN marketplace_fiatcurrency pf ON pf.id = p.fiat_id
            WHERE p.asset_id = t.asset_id AND pf.code = 'USD' LIMIT 1
        ), 2),
        t.fiat_amount
    ) END
FROM marketplace_fiatcurrency f
WHERE f.id = t.fiat_id AND t.value_eur IS NULL AND t.created_at >= now() - interval '31 days';

INSERT INTO escrow_tradevolumeday (user_id, day, eur)
SELECT party, (t.created_at AT TIME ZONE 'UTC')::date, SUM(t.value_eur)
FROM escrow_trade t, LATERAL (VALUES (t.buyer_id), (t.seller_id)) AS p(party)
WHERE t.created_at >= now() - interval '31 days' AND t.value_eur IS NOT NULL
    AND t.state NOT IN ('cancelled', 'expired')
GROUP BY 1, 2
ON CONFLICT (user_id, day) DO UPDATE SET eur = EXCLUDED.eur;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('escrow', '0007_trade_history_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='trade',
            name='value_eur',
            field=models.DecimalField(blank=True, decimal_places=4, max_digits=22, null=True),
        ),
        migrations.CreateModel(
            name='TradeVolumeDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('eur', models.DecimalField(decimal_places=4, default=Decimal('0'), max_digits=22)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('user', 'day'), name='one_volume_row_per_user_day')],
            },
        ),
        migrations.RunSQL(BACKFILL_SQL, reverse_sql=migrations.RunSQL.noop),
    ]
