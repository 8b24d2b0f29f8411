"""The running 30-day volumes the trading limits read (TradeVolumeDay): a trade's value added
for both parties when it opens, taken off again when it is cancelled or expires. Kept in the
transaction of the move, after its other locks: the rows are locked in (user, day) order, so two
moves that share a party queue on them instead of deadlocking."""

from __future__ import annotations

from django.db import connection

from escrow.models import Trade
from escrow.selectors.stats import volume_day

# Both parties' rows in one statement; ON CONFLICT takes the rows in the order of the SELECT.
_VOLUME_ADD_SQL = """
INSERT INTO escrow_tradevolumeday (user_id, day, eur)
SELECT u.id, %(day)s, %(eur)s FROM unnest(%(users)s::bigint[]) AS u(id) ORDER BY u.id
ON CONFLICT (user_id, day) DO UPDATE SET eur = escrow_tradevolumeday.eur + EXCLUDED.eur
"""


def trade_volume_count(*, trade: Trade, counted: bool) -> None:
    """Add this trade's value to both parties' volume of the day it opened (`counted`), or take
    it off again (a cancelled or expired trade counts against no limit). A trade opened before
    values were kept (value_eur null) changes nothing."""
    if trade.value_eur is None:
        return
    amount = trade.value_eur if counted else -trade.value_eur
    with connection.cursor() as cursor:
        cursor.execute(
            _VOLUME_ADD_SQL,
            {
                "day": volume_day(trade.created_at),
                "eur": amount,
                "users": sorted({int(trade.buyer_id), int(trade.seller_id)}),
            },
        )
