"""Reads of traders: profiles, public stats, limits and the volume that counts against them,
trusted and blocked lists, KYC documents."""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import (
    Avg,
    Case,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import KycDocument, Profile, TraderRelation
from common.errors import NotFound
from ledger.models import Asset
from escrow.models import Feedback, Trade
from marketplace.models import FiatCurrency, PriceIndex

logger = logging.getLogger(__name__)

# --- profiles ---------------------------------------------------------------------------------


def profile_for(user: Any) -> Profile:
    """The user's profile, created on first use (accounts made before profiles existed, or by
    createsuperuser, have none)."""
    # Always read afresh: a profile cached on the user object may predate a freeze.
    profile = Profile.objects.filter(user_id=user.pk).first()
    if profile is None:
        try:
            with transaction.atomic():
                profile = Profile.objects.create(user_id=user.pk)
        except IntegrityError:  # created meanwhile by a concurrent request
            profile = Profile.objects.get(user_id=user.pk)
    return profile


def trading_block_reason(profile: Profile, *, now: datetime | None = None) -> str | None:
    """Why this account may not post offers or open trades right now, or None."""
    now = now or timezone.now()
    if profile.is_frozen:
        why = f": {profile.frozen_reason}" if profile.frozen_reason else ""
        return (
            f"Your account is frozen{why}. You can't post offers or open trades; trades already "
            "open go on as usual. Contact support to resolve it."
        )
    if profile.suspended_until and profile.suspended_until > now:
        until = timezone.localtime(profile.suspended_until).strftime("%Y-%m-%d %H:%M %Z")
        return (
            f"Your account is suspended from trading until {until} after a dispute. You can't "
            "post offers or open trades until then; trades already open go on as usual."
        )
    return None


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


@dataclass(frozen=True)
class TraderStats:
    username: str
    trades: int
    completion_rate: Decimal | None
    # Seconds from "paid" to the seller's release, averaged over their completed sales.
    average_release_seconds: int | None = None


def trader_stats_for_users(
    *, user_ids: list[int], usernames: dict[int, str] | None = None
) -> dict[int, TraderStats]:
    """Completed trades, completion rate (completed / the finished trades that count against
    that side) and average release time per user, in one query per side (and one for the
    usernames, unless the caller has them)."""
    stats: dict[int, dict[str, Any]] = {
        uid: {"done": 0, "finished": 0, "release": None} for uid in user_ids
    }
    released = Q(state=Trade.State.COMPLETED, paid_at__isnull=False, released_at__isnull=False)
    for side in ("buyer", "seller"):
        extra: dict[str, Any] = {}
        if side == "seller":
            extra["release"] = Avg(F("released_at") - F("paid_at"), filter=released)
        rows = (
            Trade.objects.filter(**{f"{side}_id__in": user_ids}, state__in=FINISHED[side])
            .values(f"{side}_id")
            .annotate(
                done=Count("id", filter=Q(state=Trade.State.COMPLETED)),
                finished=Count("id"),
                **extra,
            )
        )
        for row in rows:
            bucket = stats[row[f"{side}_id"]]
            bucket["done"] += row["done"]
            bucket["finished"] += row["finished"]
            if row.get("release") is not None:
                bucket["release"] = row["release"]
    names = usernames
    if names is None:
        names = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    return {
        uid: TraderStats(
            username=names.get(uid, ""),
            trades=s["done"],
            completion_rate=(Decimal(s["done"] * 100) / s["finished"]).quantize(Decimal("0.1"))
            if s["finished"]
            else None,
            average_release_seconds=_seconds(s["release"]),
        )
        for uid, s in stats.items()
    }


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
    keys = {uid: f"trader-stats:v1:{uid}" for uid in user_ids}
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


# --- limits -----------------------------------------------------------------------------------

LIMITS_CURRENCY = "EUR"
DEFAULT_KYC_LIMITS_EUR: dict[int, dict[str, Decimal]] = {
    0: {"per_trade": Decimal(1_000), "per_30_days": Decimal(5_000)},
    1: {"per_trade": Decimal(10_000), "per_30_days": Decimal(50_000)},
    2: {"per_trade": Decimal(100_000), "per_30_days": Decimal(1_000_000)},
}
LIMIT_WINDOW = timedelta(days=30)
# Trades that never moved money don't use up a limit.
NOT_COUNTED = [Trade.State.CANCELLED, Trade.State.EXPIRED]


@dataclass(frozen=True)
class TierLimits:
    tier: int
    per_trade: Decimal
    per_30_days: Decimal


def kyc_limits(tier: int) -> TierLimits:
    """The tier's limits in EUR, from settings.KYC_LIMITS_EUR (tier -> per_trade, per_30_days)."""
    table = getattr(settings, "KYC_LIMITS_EUR", DEFAULT_KYC_LIMITS_EUR)
    row = table.get(tier) or table.get(str(tier)) or DEFAULT_KYC_LIMITS_EUR[tier]
    return TierLimits(
        tier=tier,
        per_trade=Decimal(str(row["per_trade"])),
        per_30_days=Decimal(str(row["per_30_days"])),
    )


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


_VALUE = DecimalField(max_digits=60, decimal_places=20)


def _trade_value_eur_expression() -> Any:
    """trade_value_eur in SQL, so a user's 30-day volume is one aggregate."""

    def index(code: str) -> Subquery:
        return Subquery(
            PriceIndex.objects.filter(asset=OuterRef("asset"), fiat__code=code).values("price")[:1],
            output_field=_VALUE,
        )

    def times(price: Subquery) -> ExpressionWrapper:
        return ExpressionWrapper(F("amount") * price, output_field=_VALUE)

    return Case(
        When(fiat__code=LIMITS_CURRENCY, then=F("fiat_amount")),
        default=Coalesce(times(index(LIMITS_CURRENCY)), times(index("USD")), F("fiat_amount")),
        output_field=_VALUE,
    )


def trade_volume_eur(*, user_ids: list[int], now: datetime | None = None) -> dict[int, Decimal]:
    """Each user's trades of the last 30 days in EUR (either side; cancelled and expired trades
    don't count), in one query."""
    since = (now or timezone.now()) - LIMIT_WINDOW
    value = _trade_value_eur_expression()
    sums = {
        f"u{uid}": Sum(value, filter=Q(buyer_id=uid) | Q(seller_id=uid), output_field=_VALUE)
        for uid in user_ids
    }
    row = (
        Trade.objects.filter(Q(buyer_id__in=user_ids) | Q(seller_id__in=user_ids))
        .filter(created_at__gte=since)
        .exclude(state__in=NOT_COUNTED)
        .aggregate(**sums)
    )
    return {uid: Decimal(row[f"u{uid}"] or 0).quantize(Decimal("0.01")) for uid in user_ids}


# --- offer requirements -----------------------------------------------------------------------


@dataclass(frozen=True)
class TakerFacts:
    """What an offer's requirements are checked against."""

    user_id: int
    tier: int
    completed_trades: int
    date_joined: datetime


def taker_facts(*, user: Any) -> TakerFacts:
    return TakerFacts(
        user_id=user.pk,
        tier=profile_for(user).kyc_tier,
        completed_trades=trader_stats(user=user).trades,
        date_joined=user.date_joined,
    )


# --- trusted and blocked lists ----------------------------------------------------------------


def relation_list_for_user(*, user: Any, kind: str | None = None) -> QuerySet[TraderRelation]:
    qs = TraderRelation.objects.filter(owner=user).select_related("other")
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("kind", "other__username")


def blocked_user_ids(*, user: Any) -> QuerySet[Any]:
    """Ids of the users this one blocked or is blocked by (a subquery, for exclude())."""
    return (
        TraderRelation.objects.filter(kind=TraderRelation.Kind.BLOCKED)
        .filter(Q(owner_id=user.pk) | Q(other_id=user.pk))
        .annotate(
            them=Case(
                When(owner_id=user.pk, then=F("other_id")),
                default=F("owner_id"),
            )
        )
        .values("them")
    )


def is_blocked_between(*, user_id: int, other_id: int) -> bool:
    return TraderRelation.objects.filter(
        Q(owner_id=user_id, other_id=other_id) | Q(owner_id=other_id, other_id=user_id),
        kind=TraderRelation.Kind.BLOCKED,
    ).exists()


def trusting_owner_ids(*, user: Any, owner_ids: list[int]) -> set[int]:
    """Which of these owners have `user` on their trusted list."""
    return set(
        TraderRelation.objects.filter(
            other_id=user.pk, owner_id__in=owner_ids, kind=TraderRelation.Kind.TRUSTED
        ).values_list("owner_id", flat=True)
    )


# --- KYC documents ----------------------------------------------------------------------------


def kyc_document_list_for_user(*, user: Any) -> QuerySet[KycDocument]:
    return KycDocument.objects.filter(user=user).order_by("-created_at", "-id")


def kyc_document_for_download(*, document_id: int, user: Any) -> KycDocument:
    """A KYC document's file for its owner and for reviewers only; anyone else (other users,
    staff without `accounts.review_kyc`, anonymous visitors) gets not-found."""
    document = KycDocument.objects.filter(pk=document_id).first()
    allowed = (
        document is not None
        and user is not None
        and user.is_authenticated
        and (document.user_id == user.pk or user.has_perm("accounts.review_kyc"))
    )
    if not allowed or not document.file:
        raise NotFound("Document not found.")
    return document


@dataclass(frozen=True)
class LimitsStatus:
    """A user's limits and how much of the 30-day one is used, for the settings page."""

    current: TierLimits
    used_30_days: Decimal
    next: TierLimits | None

    @property
    def left_30_days(self) -> Decimal:
        return max(self.current.per_30_days - self.used_30_days, Decimal(0))


def limits_status(*, user: Any) -> LimitsStatus:
    tier = profile_for(user).kyc_tier
    return LimitsStatus(
        current=kyc_limits(tier),
        used_30_days=trade_volume_eur(user_ids=[user.pk])[user.pk],
        next=kyc_limits(tier + 1) if tier < 2 else None,
    )


# --- feedback ---------------------------------------------------------------------------------


def feedback_received(*, user: Any) -> QuerySet[Feedback]:
    """What others said about this trader, newest first, with the replies."""
    return (
        Feedback.objects.filter(target=user)
        .select_related("author", "trade__asset")
        .order_by("-created_at", "-id")
    )


def feedback_summary(*, user: Any) -> dict[str, int]:
    return Feedback.objects.filter(target=user).aggregate(
        positive=Count("id", filter=Q(rating=Feedback.Rating.POSITIVE)),
        negative=Count("id", filter=Q(rating=Feedback.Rating.NEGATIVE)),
    )
