"""Reads of the price index's history (PricePoint) and of a pair's standing, for the book's chart
and its stale banner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy, pgettext_lazy

from marketplace.models import PriceIndex, PricePoint

StrOrLazy = str | Promise

# The chart's ranges: (span, bucket, words). A bucket holds its last price: 24 h in 10-minute
# steps, 7 days in hours, 30 days in 6 hours; about 150 points at most whatever the poll rate.
# The words are lazy: written out in the reader's language when the chart is drawn.
RANGES: dict[str, tuple[timedelta, timedelta, StrOrLazy]] = {
    "24h": (timedelta(hours=24), timedelta(minutes=10), gettext_lazy("the last 24 hours")),
    "7d": (timedelta(days=7), timedelta(hours=1), gettext_lazy("the last 7 days")),
    "30d": (timedelta(days=30), timedelta(hours=6), gettext_lazy("the last 30 days")),
}
# The ranges' buttons.
RANGE_LABELS: dict[str, StrOrLazy] = {
    "24h": pgettext_lazy("chart range", "24h"),
    "7d": pgettext_lazy("chart range", "7d"),
    "30d": pgettext_lazy("chart range", "30d"),
}
DEFAULT_RANGE = "24h"


def price_history(
    *, asset_id: int, fiat_id: int, since: datetime, bucket: timedelta
) -> list[tuple[datetime, Decimal]]:
    """The pair's price over time from `since`: the last price of each bucket (one query,
    grouped in PostgreSQL through the (pair, time) index), led by the price in force at `since`
    (the last one before it), so a pair priced rarely still draws from the range's start."""
    table = PricePoint._meta.db_table  # the model's own name, not input
    sql = (
        "SELECT date_bin(%s, at, %s) AS bucket, (array_agg(price ORDER BY at DESC))[1] "  # noqa: S608
        f"FROM {table} WHERE asset_id = %s AND fiat_id = %s AND at >= %s "
        "GROUP BY bucket ORDER BY bucket"
    )
    with connection.cursor() as cursor:
        params: list[Any] = [bucket, since, asset_id, fiat_id, since]
        cursor.execute(sql, params)
        rows = [(at, price) for at, price in cursor.fetchall()]
    before = (
        PricePoint.objects.filter(asset_id=asset_id, fiat_id=fiat_id, at__lt=since)
        .order_by("-at")
        .values_list("price", flat=True)
        .first()
    )
    if before is not None:
        rows.insert(0, (since, before))
    return rows


@dataclass(frozen=True)
class PairStanding:
    asset: str
    fiat: str
    price: Decimal | None
    updated_at: datetime | None
    stale_since: datetime | None
    stale_reason: str
    asset_id: int | None = None
    fiat_id: int | None = None

    @property
    def is_stale(self) -> bool:
        return self.stale_since is not None


def pair_standing(*, asset_code: str, fiat_code: str) -> PairStanding:
    """A pair's index price and whether it is stale (none: the index has no such pair)."""
    row = (
        PriceIndex.objects.filter(asset__code=asset_code.upper(), fiat__code=fiat_code.upper())
        .values_list("price", "updated_at", "stale_since", "stale_reason", "asset_id", "fiat_id")
        .first()
    )
    asset, fiat = asset_code.upper(), fiat_code.upper()
    if row is None:
        return PairStanding(asset, fiat, None, None, None, "")
    price, updated_at, stale_since, reason, asset_id, fiat_id = row
    return PairStanding(asset, fiat, price, updated_at, stale_since, reason, asset_id, fiat_id)


def stale_pairs() -> list[PairStanding]:
    """Every stale pair, for the book's banner when it shows no single pair."""
    rows = PriceIndex.objects.filter(stale_since__isnull=False).order_by(
        "asset__code", "fiat__code"
    )
    return [
        PairStanding(
            asset=r.asset.code,
            fiat=r.fiat.code,
            price=r.price,
            updated_at=r.updated_at,
            stale_since=r.stale_since,
            stale_reason=r.stale_reason,
            asset_id=r.asset_id,
            fiat_id=r.fiat_id,
        )
        for r in rows.select_related("asset", "fiat")
    ]
