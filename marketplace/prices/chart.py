"""The price chart drawn on the server as inline SVG (no script, no style attribute: classes and
static CSS, so the Content-Security-Policy holds): the index over 24 h, 7 or 30 days, and an
offer's margin line (the index times 1 + margin). Scales with its viewBox at any width; its
<title>, <desc> and a text summary (low, high, change) say what it shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext

from common.money import fmt_fiat, round_half_up
from marketplace.models import FiatCurrency
from marketplace.prices.history import (
    DEFAULT_RANGE,
    RANGE_LABELS,
    RANGES,
    PairStanding,
    pair_standing,
    price_history,
)

WIDTH, HEIGHT = 600, 220
LEFT, RIGHT, TOP, BOTTOM = 4, 4, 14, 14


@dataclass(frozen=True)
class PriceChart:
    asset: str
    fiat: str
    range_key: str
    range_words: str  # in the reader's language
    ranges: list[tuple[str, str]]
    standing: PairStanding
    has_data: bool
    line: str = ""  # the index: SVG polyline points
    area: str = ""  # under the index line: SVG polygon points
    margin_line: str = ""  # the offer's price: polyline points, when a margin is given
    margin_percent: Decimal | None = None
    low: str = ""
    high: str = ""
    first: str = ""
    last: str = ""
    change: str = ""
    direction: str = "flat"  # up / down / flat: the line's class
    summary: str = ""
    title: str = ""
    desc: str = ""
    width: int = WIDTH
    height: int = HEIGHT


def _pct(old: Decimal, new: Decimal) -> str:
    change = round_half_up((new - old) / old * 100, 2)
    return f"+{change}%" if change > 0 else f"{change}%"


def price_chart(
    *,
    asset_code: str,
    fiat_code: str,
    range_key: str | None = None,
    margin_percent: Decimal | None = None,
    now: datetime | None = None,
) -> PriceChart:
    """The chart of a pair over one of RANGES (an unknown range: the default one)."""
    key = range_key if range_key in RANGES else DEFAULT_RANGE
    span, bucket, lazy_words = RANGES[key]
    words = str(lazy_words)
    now = now or timezone.now()
    since = now - span
    standing = pair_standing(asset_code=asset_code, fiat_code=fiat_code)
    base: dict[str, Any] = {
        "asset": standing.asset,
        "fiat": standing.fiat,
        "range_key": key,
        "range_words": words,
        "ranges": [(k, str(RANGE_LABELS[k])) for k in RANGES],
        "standing": standing,
        "margin_percent": margin_percent,
    }
    pair = f"{standing.asset}/{standing.fiat}"
    if standing.asset_id is None or standing.fiat_id is None:
        return PriceChart(
            **base,
            has_data=False,
            summary=gettext("There is no {pair} price index.").format(pair=pair),
        )
    points = price_history(
        asset_id=standing.asset_id, fiat_id=standing.fiat_id, since=since, bucket=bucket
    )
    if standing.price is not None and not standing.is_stale:
        points.append((now, standing.price))  # the line reaches now at the price in force
    if len(points) < 2 or points[0][0] >= points[-1][0]:
        return PriceChart(
            **base,
            has_data=False,
            summary=gettext("Not enough {pair} price history over {range} yet.").format(
                pair=pair, range=words
            ),
        )
    precision = (
        FiatCurrency.objects.filter(code=standing.fiat).values_list("precision", flat=True).first()
    )
    precision = 2 if precision is None else precision
    prices = [p for _, p in points]
    factor = 1 + (margin_percent or 0) / Decimal(100)
    drawn = prices + ([p * factor for p in prices] if margin_percent is not None else [])
    low, high = min(prices), max(prices)
    lo, hi = min(drawn), max(drawn)
    pad = (hi - lo) * Decimal("0.08") or hi * Decimal("0.01") or Decimal(1)
    lo, hi = lo - pad, hi + pad
    x_span = (points[-1][0] - since).total_seconds() or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(at: datetime, price: Decimal) -> str:
        # Geometry only (pixels), never money: floats are fine here.
        x = LEFT + max(0.0, (at - since).total_seconds()) / x_span * plot_w
        y = TOP + float((hi - price) / (hi - lo)) * plot_h
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(at, p) for at, p in points)
    first_x = line.split(" ", 1)[0].split(",")[0]
    last_x = line.rsplit(" ", 1)[-1].split(",")[0]
    bottom = f"{TOP + plot_h:.1f}"
    area = f"{first_x},{bottom} {line} {last_x},{bottom}"
    margin_line = (
        " ".join(xy(at, p * factor) for at, p in points) if margin_percent is not None else ""
    )
    first, last = prices[0], prices[-1]
    change = _pct(first, last)
    f = lambda v: fmt_fiat(v, precision)  # noqa: E731 - a local shorthand
    summary = gettext(
        "{pair} index over {range}: low {low}, high {high} {fiat}; from {first} to {last} "
        "({change})."
    ).format(
        pair=pair,
        range=words,
        low=f(low),
        high=f(high),
        fiat=standing.fiat,
        first=f(first),
        last=f(last),
        change=change,
    )
    if margin_percent is not None:
        sign = "+" if margin_percent > 0 else ""
        summary += " " + gettext("This offer follows it at {margin}%: {price} {fiat} now.").format(
            margin=f"{sign}{margin_percent.normalize():f}",
            price=f(round_half_up(last * factor, precision)),
            fiat=standing.fiat,
        )
    if standing.is_stale:
        summary += " " + gettext("The index is stale: no current price.")
    return PriceChart(
        **base,
        has_data=True,
        line=line,
        area=area,
        margin_line=margin_line,
        low=f(low),
        high=f(high),
        first=f(first),
        last=f(last),
        change=change,
        direction="up" if last > first else "down" if last < first else "flat",
        summary=summary,
        title=gettext("{pair} price index, {range}").format(pair=pair, range=words),
        desc=summary,
    )
