"""The price feed: polls the configured exchanges (PRICE_SOURCES), prices each pair at the median
of the sources that agree, and marks a pair stale when it can't.

- `price_median`: the median of the sources' quotes, after dropping the worst outlier (a quote
  deviating more than PRICE_OUTLIER_PCT percent from the median of the others) one at a time
  while three or more remain; two quotes that disagree by more than that are no price at all.
- `prices_refresh` (beat, every PRICE_POLL_SECONDS): every source asked in parallel, outside any
  transaction (each with its PRICE_SOURCE_TIMEOUT); a fiat a source lacks is derived from its
  USD quote through the FX source. A priced pair goes through `price_index_set`, so everything
  that listens to the index (floating offers, lending's LTV checks) hears it, and a stale pair
  recovers. A pair no source could price, or whose price is older than PRICE_MAX_AGE, is marked
  stale (`price_pair_mark_stale`).
- Without sources the feed does nothing but prune the history: the index is what moderators
  set, as before the feed existed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from common.errors import ApplicationError
from marketplace import book_cache
from marketplace.models import Offer, PriceIndex, PricePoint
from marketplace.prices.sources import SOURCES, EcbFx, PriceSource, SourceError, usd_to
from marketplace.services.offers import PRICE_PRECISION, price_index_set, price_stale_listeners

logger = logging.getLogger(__name__)

FX_CACHE_KEY = "price-feed:fx-rates"


class NoConsensus(Exception):
    """The quotes that answered don't make a price (none, or two that disagree)."""


# --- the median ---------------------------------------------------------------------------------


def _median(values: Iterable[Decimal]) -> Decimal:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def _deviation_pct(value: Decimal, reference: Decimal) -> Decimal:
    return abs(value - reference) / reference * 100


@dataclass(frozen=True)
class Median:
    price: Decimal
    kept: dict[str, Decimal]
    dropped: dict[str, Decimal]


def price_median(quotes: dict[str, Decimal], *, outlier_pct: Decimal) -> Median:
    """The median of the quotes (by source name) that agree within `outlier_pct` percent.

    While three or more remain, the quote farthest from the median of the others is dropped if
    it deviates more than `outlier_pct` from it (one at a time, so that one wild quote can't
    make honest ones look far from "the rest"). Two quotes further apart than that give no
    price: nothing says which one is wrong. One quote is taken as it is."""
    if not quotes:
        raise NoConsensus("no source answered")
    with localcontext() as ctx:
        ctx.prec = 40
        kept = dict(quotes)
        dropped: dict[str, Decimal] = {}
        while len(kept) >= 3:
            deviations = {
                name: _deviation_pct(q, _median(v for n, v in kept.items() if n != name))
                for name, q in kept.items()
            }
            worst = max(sorted(deviations), key=lambda name: deviations[name])
            if deviations[worst] <= outlier_pct:
                break
            dropped[worst] = kept.pop(worst)
        if len(kept) == 2:
            (a, qa), (b, qb) = sorted(kept.items())
            if _deviation_pct(qa, qb) > outlier_pct and _deviation_pct(qb, qa) > outlier_pct:
                raise NoConsensus(f"{a} ({qa}) and {b} ({qb}) disagree by more than {outlier_pct}%")
        price = _median(kept.values()).quantize(
            Decimal(1).scaleb(-PRICE_PRECISION), rounding=ROUND_HALF_UP
        )
    return Median(price=price, kept=kept, dropped=dropped)


# --- polling --------------------------------------------------------------------------------------


def configured_sources() -> list[PriceSource]:
    """The adapters PRICE_SOURCES names, each at its PRICE_SOURCE_URLS base; an unknown name is a
    configuration error, said at once."""
    sources = []
    for name in settings.PRICE_SOURCES:
        key = name.strip().lower()
        if not key:
            continue
        if key not in SOURCES:
            raise ValueError(f"PRICE_SOURCES: unknown source {name!r} (known: {sorted(SOURCES)})")
        sources.append(
            SOURCES[key](
                base_url=settings.PRICE_SOURCE_URLS[key], timeout=settings.PRICE_SOURCE_TIMEOUT
            )
        )
    return sources


def fx_rates() -> dict[str, Decimal]:
    """The FX source's rates, cached PRICE_FX_CACHE_SECONDS (the ECB publishes once a day)."""
    cached = cache.get(FX_CACHE_KEY)
    if cached:
        return {code: Decimal(rate) for code, rate in cached.items()}
    rates = EcbFx(url=settings.PRICE_FX_URL, timeout=settings.PRICE_SOURCE_TIMEOUT).rates()
    cache.set(
        FX_CACHE_KEY, {c: str(r) for c, r in rates.items()}, timeout=settings.PRICE_FX_CACHE_SECONDS
    )
    return rates


def feed_pairs() -> list[tuple[str, str]]:
    """The pairs the feed prices: PRICE_PAIRS, else every pair the index has."""
    if settings.PRICE_PAIRS:
        pairs = []
        for text in settings.PRICE_PAIRS:
            if not text.strip():
                continue
            asset, _, fiat = text.strip().upper().partition("/")
            if not asset or not fiat:
                raise ValueError(f"PRICE_PAIRS: {text!r} is not ASSET/FIAT")
            pairs.append((asset, fiat))
        if pairs:
            return pairs
    return list(
        PriceIndex.objects.order_by("asset__code", "fiat__code").values_list(
            "asset__code", "fiat__code"
        )
    )


@dataclass
class PairQuotes:
    quotes: dict[str, Decimal] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def pair_quotes(
    pairs: list[tuple[str, str]], sources: list[PriceSource]
) -> dict[tuple[str, str], PairQuotes]:
    """Every source's quote of every pair, fetched in parallel: directly where the source quotes
    the fiat, else its USD quote times the FX rate USD→fiat; a source that quotes neither is not
    asked. Failures are kept by source with their reason."""
    asks: set[tuple[str, str, str]] = set()  # (source, asset, fiat asked)
    plan: dict[tuple[str, str], dict[str, str]] = {}  # pair -> source -> fiat asked
    for asset, fiat in pairs:
        plan[asset, fiat] = {}
        for source in sources:
            asked = fiat if source.quotes(asset, fiat) else "USD"
            if asked == "USD" and not source.quotes(asset, "USD"):
                continue
            plan[asset, fiat][source.name] = asked
            asks.add((source.name, asset, asked))
    by_name = {s.name: s for s in sources}

    def ask(item: tuple[str, str, str]) -> Decimal | str:
        name, asset, fiat = item
        try:
            return by_name[name].price(asset, fiat)
        except SourceError as exc:
            return str(exc)
        except Exception as exc:  # an adapter bug must not stop the other pairs
            logger.exception("price source %s failed on %s/%s", name, asset, fiat)
            return f"failed ({type(exc).__name__})"

    ordered = sorted(asks)
    answers: dict[tuple[str, str, str], Decimal | str] = {}
    if ordered:
        with ThreadPoolExecutor(max_workers=min(8, len(ordered))) as pool:
            answers = dict(zip(ordered, pool.map(ask, ordered), strict=True))

    fx: dict[str, Decimal] | str | None = None
    result: dict[tuple[str, str], PairQuotes] = {}
    for (asset, fiat), asked_by in plan.items():
        got = result[asset, fiat] = PairQuotes()
        for name, asked in asked_by.items():
            answer = answers[name, asset, asked]
            if isinstance(answer, str):
                got.failures[name] = answer
                continue
            if asked == fiat:
                got.quotes[name] = answer
                continue
            if fx is None:
                try:
                    fx = fx_rates()
                except SourceError as exc:
                    fx = f"FX: {exc}"
            if isinstance(fx, str):
                got.failures[name] = fx
                continue
            try:
                got.quotes[name] = answer * usd_to(fx, fiat)
            except SourceError as exc:
                got.failures[name] = f"FX: {exc}"
    return result


def prices_refresh(*, now: datetime | None = None) -> dict[str, int]:
    """One run of the feed (beat): price every pair, mark stale the ones it can't, mark stale the
    ones whose price is too old, prune the history. Returns the counts."""
    sources = configured_sources()
    counts = {"priced": 0, "stale": 0, "pruned": 0}
    if sources:
        pairs = feed_pairs()
        for (asset, fiat), got in pair_quotes(pairs, sources).items():
            try:
                median = price_median(got.quotes, outlier_pct=settings.PRICE_OUTLIER_PCT)
            except NoConsensus as exc:
                failed = "; ".join(f"{n}: {why}" for n, why in sorted(got.failures.items()))
                reason = f"{exc}" + (f" ({failed})" if failed else "")
                logger.warning("price %s/%s: no price: %s", asset, fiat, reason)
                counts["stale"] += price_pair_mark_stale(
                    asset_code=asset, fiat_code=fiat, reason=reason
                )
                continue
            if median.dropped or got.failures:
                logger.info(
                    "price %s/%s %s from %s; outliers %s; failed %s",
                    asset, fiat, median.price, sorted(median.kept),
                    {n: str(q) for n, q in median.dropped.items()}, got.failures,
                )  # fmt: skip
            source = ("feed:" + "+".join(sorted(median.kept)))[:64]
            try:
                price_index_set(asset_code=asset, fiat_code=fiat, price=median.price, source=source)
            except ApplicationError as exc:  # PRICE_PAIRS names an asset or fiat we don't have
                logger.error("price %s/%s not set: %s", asset, fiat, exc.message)
                continue
            counts["priced"] += 1
        counts["stale"] += prices_mark_aged(pairs=pairs, now=now)
    counts["pruned"] = price_history_prune(now=now)
    return counts


# --- staleness ------------------------------------------------------------------------------------


def price_pair_mark_stale(*, asset_code: str, fiat_code: str, reason: str) -> bool:
    """Mark a pair stale, once: its floating offers lose their price (so they leave the book and
    can't be taken) in the same transaction, and the listeners (the moderators' alert) are told
    on commit. A pair already stale stays as it is (no second alert); a pair the index doesn't
    have has nothing floating on it. True if the pair has just become stale."""
    with transaction.atomic():
        row = (
            PriceIndex.objects.select_for_update()
            .select_related("asset", "fiat")
            .filter(asset__code=asset_code, fiat__code=fiat_code)
            .first()
        )
        if row is None or row.stale_since is not None:
            return False
        row.stale_since = timezone.now()
        row.stale_reason = reason[:300]
        # Not through save(): updated_at is when the price was last set, and must stay so.
        PriceIndex.objects.filter(pk=row.pk).update(
            stale_since=row.stale_since, stale_reason=row.stale_reason
        )
        Offer.objects.filter(
            asset_id=row.asset_id, fiat_id=row.fiat_id, price_type=Offer.PriceType.FLOATING
        ).update(effective_price=None)
        book_cache.book_changed(side=None, asset_id=row.asset_id, fiat_id=row.fiat_id)
        for listener in price_stale_listeners:
            transaction.on_commit(lambda listener=listener: listener(row, True), robust=True)  # type: ignore[misc]
    logger.warning("price %s/%s is stale: %s", asset_code, fiat_code, reason)
    return True


def prices_mark_aged(*, pairs: list[tuple[str, str]], now: datetime | None = None) -> int:
    """Mark stale every fed pair whose price is older than PRICE_MAX_AGE (the feed stopped, or
    kept failing while the pair was already priced long ago)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.PRICE_MAX_AGE)
    wanted = set(pairs)
    aged = PriceIndex.objects.filter(stale_since__isnull=True, updated_at__lt=cutoff).values_list(
        "asset__code", "fiat__code", "updated_at"
    )
    marked = 0
    for asset, fiat, updated_at in aged:
        if (asset, fiat) in wanted:
            reason = (
                f"no fresh price since {updated_at.isoformat(timespec='seconds')} "
                f"(PRICE_MAX_AGE {settings.PRICE_MAX_AGE} s)"
            )
            marked += price_pair_mark_stale(asset_code=asset, fiat_code=fiat, reason=reason)
    return marked


def price_history_prune(*, now: datetime | None = None) -> int:
    """Delete history older than PRICE_HISTORY_DAYS; returns how many rows went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.PRICE_HISTORY_DAYS)
    deleted, _ = PricePoint.objects.filter(at__lt=cutoff).delete()
    return deleted
