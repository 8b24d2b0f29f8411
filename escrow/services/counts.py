"""The traders' counts (TraderCount): PostgreSQL's triggers on escrow_trade and escrow_feedback
write each statement's change as rows of TraderCountChange (escrow/migrations/
0010_trader_counts.py); this folds them into the totals, on the beat. Readers add the changes not
yet folded, so the counts are exact whenever they are read; folding only keeps what a read sums
small."""

from __future__ import annotations

from django.db import connection, transaction

# One statement: the change rows leave and their sums land in the totals at once, so a reader
# (one statement over both tables) counts each change exactly once. The totals' rows are locked
# in (user, other) order, and only a fold locks them: two folds queue, never deadlock. (PostgreSQL
# runs a data-modifying WITH whether or not the statement reads it.)
_FOLD_SQL = """
WITH moved AS (
    DELETE FROM escrow_tradercountchange
    WHERE id IN (SELECT id FROM escrow_tradercountchange ORDER BY id LIMIT %(limit)s)
    RETURNING user_id, other_id, done, finished, positive, negative
), folded AS (
    INSERT INTO escrow_tradercount AS c (user_id, other_id, done, finished, positive, negative)
    SELECT user_id, other_id, SUM(done), SUM(finished), SUM(positive), SUM(negative)
    FROM moved GROUP BY user_id, other_id ORDER BY user_id, other_id
    ON CONFLICT (user_id, other_id) DO UPDATE
    SET done = c.done + EXCLUDED.done, finished = c.finished + EXCLUDED.finished,
        positive = c.positive + EXCLUDED.positive, negative = c.negative + EXCLUDED.negative
)
SELECT count(*) FROM moved
"""


def trader_counts_fold(*, limit: int = 20_000) -> int:
    """Fold the waiting change rows into the totals, `limit` a transaction, until none is left;
    how many were folded."""
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_FOLD_SQL, {"limit": limit})
            moved = int(cursor.fetchone()[0])
        total += moved
        if moved < limit:
            return total
