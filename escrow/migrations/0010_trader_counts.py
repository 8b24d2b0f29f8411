"""The traders' counts (escrow.models.TraderCount), kept by PostgreSQL: statement-level triggers
on escrow_trade write what each INSERT, UPDATE or DELETE changed in them, per (trader,
counterparty), as TraderCountChange rows; escrow.services.counts folds those into the totals.
Then the finished trades of today are counted in.

Why change rows and not the totals themselves: a settlement batch updates its trades before it
locks the ledger's accounts, and a cancel voids its hold (locking the seller's account) before
it updates its trade. Upserting a pair's total in the trigger would lock that row in the middle
of both, so a batch and a cancel of the same two traders could deadlock. An INSERT waits on
nobody.
"""


import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


# Which states count, per side: escrow.selectors.stats.FINISHED (a test holds the two equal).
DONE = "'completed'"
FINISHED = {
    "buyer": "'completed', 'cancelled', 'expired', 'refunded'",
    "seller": "'completed', 'split'",
}


def _contributions(table: str, sign: str) -> str:
    """What each row of `table` counts for its buyer (against its seller) and for its seller."""
    return f"""
        SELECT buyer_id AS user_id, seller_id AS other_id,
               {sign}(state IN ({DONE}))::int AS done,
               {sign}(state IN ({FINISHED["buyer"]}))::int AS finished
        FROM {table}
        UNION ALL
        SELECT seller_id, buyer_id, {sign}(state IN ({DONE}))::int,
               {sign}(state IN ({FINISHED["seller"]}))::int
        FROM {table}"""


def _record(parts: str) -> str:
    # Rows whose state did not change add and take off the same: no row for them.
    return f"""
        INSERT INTO escrow_tradercountchange (user_id, other_id, done, finished)
        SELECT user_id, other_id, SUM(done), SUM(finished) FROM ({parts}) AS d
        GROUP BY user_id, other_id HAVING SUM(done) <> 0 OR SUM(finished) <> 0;"""


TRACK_SQL = f"""
CREATE FUNCTION escrow_trader_counts_track() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_record(_contributions("added", ""))}
    ELSIF TG_OP = 'UPDATE' THEN
        {_record(_contributions("added", "") + " UNION ALL " + _contributions("removed", "-"))}
    ELSE
        {_record(_contributions("removed", "-"))}
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER escrow_trade_counts_insert AFTER INSERT ON escrow_trade
REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION escrow_trader_counts_track();
CREATE TRIGGER escrow_trade_counts_update AFTER UPDATE ON escrow_trade
REFERENCING OLD TABLE AS removed NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION escrow_trader_counts_track();
CREATE TRIGGER escrow_trade_counts_delete AFTER DELETE ON escrow_trade
REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION escrow_trader_counts_track();

ALTER TABLE escrow_tradercountchange SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000);
"""

# The trades finished when the triggers start (tests run it again on a copy).
BACKFILL_SQL = f"""
INSERT INTO escrow_tradercount (user_id, other_id, done, finished)
SELECT user_id, other_id, SUM(done), SUM(finished)
FROM ({_contributions("escrow_trade", "")}) AS d
GROUP BY user_id, other_id HAVING SUM(finished) <> 0 OR SUM(done) <> 0;
"""

UNTRACK_SQL = """
DROP TRIGGER IF EXISTS escrow_trade_counts_insert ON escrow_trade;
DROP TRIGGER IF EXISTS escrow_trade_counts_update ON escrow_trade;
DROP TRIGGER IF EXISTS escrow_trade_counts_delete ON escrow_trade;
DROP FUNCTION IF EXISTS escrow_trader_counts_track();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('escrow', '0009_trade_party_indexes_folded'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='TraderCountChange',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('done', models.IntegerField()),
                ('finished', models.IntegerField()),
                ('other', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('user', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.CreateModel(
            name='TraderCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('done', models.IntegerField(default=0)),
                ('finished', models.IntegerField(default=0)),
                ('other', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('user', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('user', 'other'), name='one_count_row_per_pair')],
            },
        ),
        migrations.RunSQL(TRACK_SQL + BACKFILL_SQL, reverse_sql=UNTRACK_SQL),
    ]
