"""Reads of traders' public stats."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q

from marketplace.models import Trade

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


def trader_stats_for_users(*, user_ids: list[int]) -> dict[int, TraderStats]:
    """Completed trades and completion rate per user (completed / the finished trades that count
    against that side), in one query per side."""
    stats: dict[int, dict[str, int]] = {uid: {"done": 0, "finished": 0} for uid in user_ids}
    for side in ("buyer", "seller"):
        rows = (
            Trade.objects.filter(**{f"{side}_id__in": user_ids}, state__in=FINISHED[side])
            .values(f"{side}_id")
            .annotate(done=Count("id", filter=Q(state=Trade.State.COMPLETED)), finished=Count("id"))
        )
        for row in rows:
            bucket = stats[row[f"{side}_id"]]
            bucket["done"] += row["done"]
            bucket["finished"] += row["finished"]
    from django.contrib.auth import get_user_model

    names = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    return {
        uid: TraderStats(
            username=names.get(uid, ""),
            trades=s["done"],
            completion_rate=(Decimal(s["done"] * 100) / s["finished"]).quantize(Decimal("0.1"))
            if s["finished"]
            else None,
        )
        for uid, s in stats.items()
    }


def trader_stats(*, user: Any) -> TraderStats:
    return trader_stats_for_users(user_ids=[user.pk])[user.pk]
