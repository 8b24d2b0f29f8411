"""The traders' counts (escrow.models.TraderCount), kept by PostgreSQL: statement-level triggers
on escrow_trade and escrow_feedback write what each INSERT, UPDATE or DELETE changed in them,
per (trader, counterparty), as TraderCountChange rows; escrow.services.counts folds those into
the totals. Then the finished trades and the ratings of today are counted in.

Why change rows and not the totals themselves: a settlement batch updates its trades before it
locks the ledger's accounts, and a cancel voids its hold (locking the seller's account) before
it updates its trade. Upserting a pair's total in the trigger would lock that row in the middle
of both, so a batch and a cancel of the same two traders could deadlock. An INSERT waits on
nobody.
"""

from collections.abc import Callable

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# Which states count, per side: escrow.selectors.stats.FINISHED (a test holds the two equal).
DONE = "'completed'"
FINISHED = {
    "buyer": "'completed', 'cancelled', 'expired', 'refunded'",
    "seller": "'completed', 'split'",
}


def _trades(table: str, sign: str) -> str:
    """What each trade of `table` counts for its buyer (against its seller) and its seller."""
    return f"""
        SELECT buyer_id AS user_id, seller_id AS other_id,
               {sign}(state IN ({DONE}))::int AS done,
               {sign}(state IN ({FINISHED["buyer"]}))::int AS finished,
               0 AS positive, 0 AS negative
        FROM {table}
        UNION ALL
        SELECT seller_id, buyer_id, {sign}(state IN ({DONE}))::int,
               {sign}(state IN ({FINISHED["seller"]}))::int, 0, 0
        FROM {table}"""


def _ratings(table: str, sign: str) -> str:
    """What each rating of `table` counts for its target (against its author)."""
    return f"""
        SELECT target_id AS user_id, author_id AS other_id, 0 AS done, 0 AS finished,
               {sign}(rating = 'positive')::int AS positive,
               {sign}(rating = 'negative')::int AS negative
        FROM {table}"""


_SUMS = "SUM(done), SUM(finished), SUM(positive), SUM(negative)"
_ANY = "SUM(done) <> 0 OR SUM(finished) <> 0 OR SUM(positive) <> 0 OR SUM(negative) <> 0"


def _record(parts: str) -> str:
    # Rows whose counted columns did not change add and take off the same: no row for them.
    return f"""
        INSERT INTO escrow_tradercountchange (user_id, other_id, done, finished, positive,
                                              negative)
        SELECT user_id, other_id, {_SUMS} FROM ({parts}) AS d
        GROUP BY user_id, other_id HAVING {_ANY};"""


def _function(name: str, rows: Callable[[str, str], str]) -> str:
    return f"""
CREATE FUNCTION {name}() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_record(rows("added", ""))}
    ELSIF TG_OP = 'UPDATE' THEN
        {_record(rows("added", "") + " UNION ALL " + rows("removed", "-"))}
    ELSE
        {_record(rows("removed", "-"))}
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""


def _triggers(table: str, function: str) -> str:
    return f"""
CREATE TRIGGER {table}_counts_insert AFTER INSERT ON {table}
REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION {function}();
CREATE TRIGGER {table}_counts_update AFTER UPDATE ON {table}
REFERENCING OLD TABLE AS removed NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION {function}();
CREATE TRIGGER {table}_counts_delete AFTER DELETE ON {table}
REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""


TRACK_SQL = (
    _function("escrow_trader_counts_track", _trades)
    + _triggers("escrow_trade", "escrow_trader_counts_track")
    + _function("escrow_trader_ratings_track", _ratings)
    + _triggers("escrow_feedback", "escrow_trader_ratings_track")
    + """
ALTER TABLE escrow_tradercountchange SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000);
"""
)

# The trades and ratings there when the triggers start (tests run it again on a copy).
BACKFILL_SQL = f"""
INSERT INTO escrow_tradercount (user_id, other_id, done, finished, positive, negative)
SELECT user_id, other_id, {_SUMS}
FROM ({_trades("escrow_trade", "")} UNION ALL {_ratings("escrow_feedback", "")}) AS d
GROUP BY user_id, other_id HAVING {_ANY};
"""

UNTRACK_SQL = """
DROP TRIGGER IF EXISTS escrow_trade_counts_insert ON escrow_trade;
DROP TRIGGER IF EXISTS escrow_trade_counts_update ON escrow_trade;
DROP TRIGGER IF EXISTS escrow_trade_counts_delete ON escrow_trade;
DROP TRIGGER IF EXISTS escrow_feedback_counts_insert ON escrow_feedback;
DROP TRIGGER IF EXISTS escrow_feedback_counts_update ON escrow_feedback;
DROP TRIGGER IF EXISTS escrow_feedback_counts_delete ON escrow_feedback;
DROP FUNCTION IF EXISTS escrow_trader_counts_track();
DROP FUNCTION IF EXISTS escrow_trader_ratings_track();
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
                ('done', models.IntegerField(default=0)),
                ('finished', models.IntegerField(default=0)),
                ('positive', models.IntegerField(default=0)),
                ('negative', models.IntegerField(default=0)),
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
                ('positive', models.IntegerField(default=0)),
                ('negative', models.IntegerField(default=0)),
                ('other', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('user', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('user', 'other'), name='one_count_row_per_pair')],
            },
        ),
        migrations.RunSQL(TRACK_SQL + BACKFILL_SQL, reverse_sql=UNTRACK_SQL),
    ]
