"""Traders' figures that count trades: public stats (completed trades, completion rate, release
time), the 30-day volume that counts against KYC limits, the facts offer requirements are checked
against, and feedback. Here because escrow owns trades; the order book (marketplace, a layer below)
gets the first and third through the readers registered in EscrowConfig.ready()."""

from __future__ import annotations

import logging
from dataclasses import astuple
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Avg,
    Count,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.utils import timezone

from accounts.models import Profile
from accounts.selectors import (
    LIMITS_CURRENCY,
    TakerFacts,
    TraderStats,
    accounts_linked_sql,
    profile_for,
)
from common.prepared import PreparedRows
from escrow.models import EscrowEvent, Feedback, Trade, TraderCount, TraderCountChange
from ledger.models import Asset
from marketplace.models import FiatCurrency, PriceIndex

logger = logging.getLogger(__name__)

# --- public stats -----------------------------------------------------------------------------

# Which finished trades count against a side's completion rate: a buyer who cancels, lets the
# window run out or loses a dispute didn't complete; a seller fails only by a dispute split.
FINISHED = {
    "buyer": [
        Trade.State.COMPLETED,
        Trade.State.CANCELLED,
        Trade.State.EXPIRED,
        Trade.State.REFUNDED,
    ],
    "seller": [Trade.State.COMPLETED, Trade.State.SPLIT],
}


def trader_stats_for_users(
    *, user_ids: list[int], usernames: dict[int, str] | None = None, now: datetime | None = None
) -> dict[int, TraderStats]:
    """Completed trades, completion rate (completed / the finished trades that count against
    that side), average release time and when they were last seen, per user: one query for the
    counts (TraderCount: a row per counterparty, not per trade), one for the release times and
    one for the profiles (usernames and last seen). Trades with a linked account (a sock
    puppet, accounts.selectors) don't count."""
    counts = trader_counts(user_ids=user_ids)
    stats: dict[int, dict[str, Any]] = {
        uid: {"done": counts[uid][0], "finished": counts[uid][1]} for uid in user_ids
    }
    release = average_release_seconds(user_ids=user_ids, now=now)
    profiles = get_user_model().objects.filter(pk__in=user_ids)
    if usernames is None:
        rows_seen = list(profiles.values_list("pk", "username", "profile__last_seen"))
        names = {pk: name for pk, name, _ in rows_seen}
        seen = {pk: last for pk, _, last in rows_seen}
    else:
        names = usernames
        seen = dict(
            Profile.objects.filter(user_id__in=user_ids).values_list("user_id", "last_seen")
        )
    return {
        uid: TraderStats(
            username=names.get(uid, ""),
            trades=s["done"],
            completion_rate=(Decimal(s["done"] * 100) / s["finished"]).quantize(Decimal("0.1"))
            if s["finished"]
            else None,
            average_release_seconds=release.get(uid),
            last_seen=seen.get(uid),
        )
        for uid, s in stats.items()
    }


def _pair_rows(who: Q, busy: int) -> QuerySet[Any, Any]:
    """Per user, the sums of their pair rows: the folded totals and the changes not folded yet,
    in one statement (a fold moves rows from one to the other at once, so each change is
    counted once), without a counterparty linked to the user. At most two rows a user."""
    parts = [
        model.objects.filter(who)
        .exclude(accounts_linked_sql(user_field="user_id", other_field="other_id", busy=busy))
        .values("user_id")
        .annotate(d=Sum("done"), f=Sum("finished"), p=Sum("positive"), n=Sum("negative"))
        .values_list("user_id", "d", "f", "p", "n")
        .order_by()
        for model in (TraderCount, TraderCountChange)
    ]
    return parts[0].union(parts[1], all=True)


# One trader's (a profile, the trade room's counterparty, an offer's maker): built once.
_PAIR_SUMS_OF_ONE = PreparedRows(lambda uid, busy: _pair_rows(Q(user_id=uid), busy))


def _pair_sums(*, user_ids: list[int]) -> dict[int, tuple[int, int, int, int]]:
    """Each user's (completed, finished, positive, negative) from the pair rows."""
    if not user_ids:
        return {}
    busy = settings.LINK_IP_MAX_USERS
    if len(user_ids) == 1:
        rows = _PAIR_SUMS_OF_ONE(int(user_ids[0]), busy)
    else:
        rows = list(_pair_rows(Q(user_id__in=user_ids), busy))
    sums = {uid: [0, 0, 0, 0] for uid in user_ids}
    for uid, *values in rows:
        for i, value in enumerate(values):
            sums[uid][i] += int(value or 0)
    return {uid: (s[0], s[1], s[2], s[3]) for uid, s in sums.items()}


def trader_counts(*, user_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Each user's (completed, finished) trades as FINISHED counts them, from the pair rows
    (TraderCount: one a counterparty, however many trades), in one query."""
    return {uid: (s[0], s[1]) for uid, s in _pair_sums(user_ids=user_ids).items()}


def trader_counts_recount(*, user_ids: list[int]) -> dict[int, tuple[int, int]]:
    """trader_counts counted from the trades themselves: what the kept counts must equal (the
    tests hold them to it; an operator can compare them)."""
    stats = {uid: [0, 0] for uid in user_ids}
    for side in ("buyer", "seller"):
        other = "seller" if side == "buyer" else "buyer"
        rows = (
            Trade.objects.filter(**{f"{side}_id__in": user_ids}, state__in=FINISHED[side])
            .exclude(accounts_linked_sql(user_field=f"{side}_id", other_field=f"{other}_id"))
            .values(f"{side}_id")
            .annotate(
                done=Count("id", filter=Q(state=Trade.State.COMPLETED)),
                finished=Count("id"),
            )
        )
        for row in rows:
            stats[row[f"{side}_id"]][0] += row["done"]
            stats[row[f"{side}_id"]][1] += row["finished"]
    return {uid: (done, finished) for uid, (done, finished) in stats.items()}


def _release_means(who: Q, since: datetime, busy: int) -> QuerySet[Any, Any]:
    """(seller id, mean paid -> release) of the sellers in `who`: average_release_seconds."""

    def moved_to(state: str, **extra: Any) -> Subquery:
        return Subquery(
            EscrowEvent.objects.filter(trade_id=OuterRef("pk"), new_state=state, **extra)
            .order_by("created_at", "id")
            .values("created_at")[:1]
        )

    return (
        # released_at is set by the same move as the release event: it narrows the scan to the
        # window through the trades' own column before the events are read.
        Trade.objects.filter(who, state=Trade.State.COMPLETED, released_at__gte=since)
        .exclude(accounts_linked_sql(user_field="seller_id", other_field="buyer_id", busy=busy))
        .annotate(
            paid_event=moved_to(Trade.State.PAID),
            released_event=moved_to(Trade.State.RELEASING, actor_role="seller"),
        )
        .filter(paid_event__isnull=False, released_event__gte=since)
        .values("seller_id")
        .annotate(mean=Avg(F("released_event") - F("paid_event")))
        .values_list("seller_id", "mean")
    )


# One seller's (a profile, the trade room's counterparty, an offer's maker): built once.
_RELEASE_MEAN_OF_ONE = PreparedRows(
    lambda uid, since, busy: _release_means(Q(seller_id=uid), since, busy)
)


def average_release_seconds(*, user_ids: list[int], now: datetime | None = None) -> dict[int, int]:
    """Each seller's mean time from "paid" to their own release, from the trades' events: the
    completed sales they released themselves (not a moderator's decision for the buyer) in the
    last RELEASE_TIME_WINDOW_DAYS, sock puppets' trades left out. The mean, as Binance shows
    ("average release time"), in one aggregate query for a whole page of makers; sellers
    without such a sale are absent."""
    if not user_ids:
        return {}
    since = (now or timezone.now()) - timedelta(days=settings.RELEASE_TIME_WINDOW_DAYS)
    busy = settings.LINK_IP_MAX_USERS
    if len(user_ids) == 1:
        rows = _RELEASE_MEAN_OF_ONE(int(user_ids[0]), since, busy)
    else:
        rows = list(_release_means(Q(seller_id__in=user_ids), since, busy))
    return {seller: seconds for seller, mean in rows if (seconds := _seconds(mean)) is not None}


def _seconds(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return round(value.total_seconds())
    # SQLite averages durations as microseconds.
    return round(float(value) / 1_000_000)


def trader_stats_recent(
    *, user_ids: list[int], usernames: dict[int, str] | None = None
) -> dict[int, TraderStats]:
    """trader_stats_for_users as computed at most settings.TRADER_STATS_CACHE_SECONDS ago, from
    the cache (one round trip for all of them): for lists that show many traders' stats on every
    request, such as the order book, where counting each maker's whole history per request
    would grow with their trades. A trader's own pages read their stats fresh. A cache that is
    down or stalls only costs the fresh computation."""
    ttl = settings.TRADER_STATS_CACHE_SECONDS
    # v2: the release time from events over a window, and last_seen (issue 20).
    keys = {uid: f"trader-stats:v2:{uid}" for uid in user_ids}
    try:
        cached = cache.get_many(list(keys.values())) if ttl > 0 else {}
    except Exception:  # Redis down or stalled: count them all
        logger.debug("trader stats cache unavailable", exc_info=True)
        cached = {}
    found = {uid: TraderStats(*cached[key]) for uid, key in keys.items() if key in cached}
    missing = [uid for uid in user_ids if uid not in found]
    if missing:
        fresh = trader_stats_for_users(
            user_ids=missing,
            usernames=None if usernames is None else {u: usernames[u] for u in missing},
        )
        found.update(fresh)
        if ttl > 0:
            try:
                cache.set_many({keys[u]: astuple(s) for u, s in fresh.items()}, timeout=ttl)
            except Exception:  # counted again next time
                logger.debug("trader stats not cached", exc_info=True)
    return found


def trader_stats(*, user: Any) -> TraderStats:
    return trader_stats_for_users(user_ids=[user.pk])[user.pk]


# --- limits ---------------------------------------------------------------------------------

LIMIT_WINDOW = timedelta(days=30)
# Trades that never moved money don't use up a limit. A funded trade not yet paid does count, for
# both parties: it may still be paid and completed, and two parties could otherwise open any
# number of trades at once past their limits. What keeps takers who never pay from using up a
# seller's limit (finding 6) is that their trades stop counting the moment they expire or are
# cancelled, that a buyer holds at most MAX_UNPAID_TRADES of them, and that a taker opens at most
# TAKES_PER_MAKER_PER_MINUTE against one maker (escrow.services.opening); escrow/tests/
# test_abuse.py TestVolumeLimits proves the first.
NOT_COUNTED = [Trade.State.CANCELLED, Trade.State.EXPIRED]


def trade_value_eur(
    *, asset: Asset, fiat: FiatCurrency, amount: Decimal, fiat_amount: Decimal
) -> Decimal:
    """A trade's size in EUR: its fiat amount when it is in EUR, else the asset amount at the
    asset's EUR index price."""
    if fiat.code == LIMITS_CURRENCY:
        return fiat_amount
    prices = dict(
        PriceIndex.objects.filter(asset=asset, fiat__code__in=[LIMITS_CURRENCY, "USD"]).values_list(
            "fiat__code", "price"
        )
    )
    if LIMITS_CURRENCY in prices:
        return (amount * prices[LIMITS_CURRENCY]).quantize(Decimal("0.01"))
    # No EUR index for this asset: there is no FX table, so take its USD index 1:1 for EUR
    # (close enough to pick a limit), and as a last resort the trade's fiat amount itself 1:1.
    if "USD" in prices:
        return (amount * prices["USD"]).quantize(Decimal("0.01"))
    return fiat_amount


# A user's 30-day volume from the running rows (escrow.services.volumes): at most 31 a user, however
# many trades they made. The window is whole UTC days: today and the 30 days before it, the first
# of them whole, so a trade counts at least 30 days, never less.
_VOLUME_SQL = """
SELECT user_id, SUM(eur) FROM escrow_tradevolumeday
WHERE user_id = ANY(%(ids)s) AND day >= %(since)s
GROUP BY user_id
"""


def volume_day(at: datetime) -> date:
    """The UTC day a trade's value is counted on (the day it opened)."""
    return at.astimezone(UTC).date()


def trade_volume_eur(*, user_ids: list[int], now: datetime | None = None) -> dict[int, Decimal]:
    """Each user's trades of the last 30 days in EUR (either side; cancelled and expired trades
    don't count), each at its value when it opened (Trade.value_eur), in one query."""
    since = volume_day((now or timezone.now()) - LIMIT_WINDOW)
    with connection.cursor() as cursor:
        cursor.execute(_VOLUME_SQL, {"ids": [int(uid) for uid in user_ids], "since": since})
        sums = {int(uid): total for uid, total in cursor.fetchall()}
    return {uid: Decimal(sums.get(uid) or 0).quantize(Decimal("0.01")) for uid in user_ids}


def trade_volume_eur_recount(
    *, user_ids: list[int], now: datetime | None = None
) -> dict[int, Decimal]:
    """trade_volume_eur counted from the trades themselves, over the same days: what the running
    rows must equal (the tests hold them to it; an operator can compare them)."""
    since = volume_day((now or timezone.now()) - LIMIT_WINDOW)
    start = datetime.combine(since, time.min, tzinfo=UTC)
    counted = Trade.objects.filter(created_at__gte=start, value_eur__isnull=False).exclude(
        state__in=NOT_COUNTED
    )
    sums = {uid: Decimal(0) for uid in user_ids}
    for buyer, seller, value in counted.filter(
        Q(buyer_id__in=user_ids) | Q(seller_id__in=user_ids)
    ).values_list("buyer_id", "seller_id", "value_eur"):
        for uid in {buyer, seller} & set(sums):
            sums[uid] += Decimal(value or 0)
    return {uid: total.quantize(Decimal("0.01")) for uid, total in sums.items()}


# --- offer requirements ---------------------------------------------------------------------


def completed_trades(*, user_id: int) -> int:
    """The user's completed trades as trader_stats counts them (either side, sock puppets'
    trades left out): from the pair rows, one statement built once, however long the history."""
    return trader_counts(user_ids=[user_id])[user_id][0]


def taker_facts(*, user: Any) -> TakerFacts:
    profile = profile_for(user)
    return TakerFacts(
        user_id=user.pk,
        tier=profile.kyc_tier,
        completed_trades=completed_trades(user_id=user.pk),
        date_joined=user.date_joined,
        country=profile.country,
    )


# --- trusted and blocked lists ----------------------------------------------------------------


# --- feedback ---------------------------------------------------------------------------------


def feedback_received(*, user: Any) -> QuerySet[Feedback]:
    """What others said about this trader, newest first, with the replies."""
    return (
        Feedback.objects.filter(target=user)
        .select_related("author", "trade__asset")
        .order_by("-created_at", "-id")
    )


def feedback_on_trade(*, trade_id: int) -> list[Feedback]:
    """The (at most two) ratings the parties left on one trade, with their authors."""
    return list(
        Feedback.objects.filter(trade_id=trade_id).select_related("author", "target").order_by("id")
    )


def feedback_summary(*, user: Any) -> dict[str, int]:
    """Positive and negative ratings, but none from a linked account (a sock puppet): from the
    pair rows (TraderCount), one query however many ratings."""
    _, _, positive, negative = _pair_sums(user_ids=[user.pk])[user.pk]
    return {"positive": positive, "negative": negative}


def feedback_summary_recount(*, user: Any) -> dict[str, int]:
    """feedback_summary counted from the ratings themselves (the tests hold the two equal)."""
    return (
        Feedback.objects.filter(target=user)
        .exclude(accounts_linked_sql(user_field="target_id", other_field="author_id"))
        .aggregate(
            positive=Count("id", filter=Q(rating=Feedback.Rating.POSITIVE)),
            negative=Count("id", filter=Q(rating=Feedback.Rating.NEGATIVE)),
        )
    )
