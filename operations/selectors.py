"""What health, readiness and the metrics read: one query per figure, each on an index the
apps already keep for their own sweeps (settlement's pending queue, sealing's unsealed tail)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from escrow.models import Settlement, Trade
from ledger.models import Checkpoint, Transfer, Withdrawal
from notifications.models import WebhookDelivery

# A probe that hangs is a failed probe: an orchestrator's own timeout is a few seconds.
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return Check(False, {"error": type(exc).__name__})
    return Check(True)


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
    )


def check_redis() -> Check:
    try:
        with redis_client() as client:
            client.ping()
    except Exception as exc:
        return Check(False, {"error": type(exc).__name__})
    return Check(True)


def uncovered_entry_age(now: dt.datetime | None = None) -> float:
    """Seconds the oldest sealed entry that no checkpoint holds has waited (0: none waits)."""
    now = now or timezone.now()
    covered = (
        Checkpoint.objects.order_by("-tree_size").values_list("tree_size", flat=True).first() or 0
    )
    # Seqs have no gaps: the oldest uncovered entry is the next one.
    sealed_at = Transfer.objects.filter(seq=covered + 1).values_list("sealed_at", flat=True).first()
    return max((now - sealed_at).total_seconds(), 0.0) if sealed_at else 0.0


def check_checkpoint_lag() -> Check:
    """Not ready when sealed entries have gone without a checkpoint for more than three times
    LEDGER_CHECKPOINT_INTERVAL (the sequencer or its key is broken); a quiet ledger whose last
    checkpoint is old is fine: there is nothing new to sign."""
    interval = settings.LEDGER_CHECKPOINT_INTERVAL
    try:
        age = uncovered_entry_age()
    except Exception as exc:
        return Check(False, {"error": type(exc).__name__})
    limit = 3 * interval
    ok = not interval or age <= limit
    return Check(ok, {"uncovered_seconds": round(age, 1), "limit_seconds": limit})


def readiness() -> dict[str, Check]:
    database = check_database()
    checks = {"database": database, "redis": check_redis()}
    checks["checkpoint_lag"] = (
        check_checkpoint_lag() if database.ok else Check(False, {"error": "database down"})
    )
    return checks


# --- the figures of /metrics ------------------------------------------------------------------


def trades_by_state() -> dict[str, int]:
    counts = dict.fromkeys(Trade.State.values, 0)
    for row in Trade.objects.values("state").annotate(n=Count("pk")).order_by():
        counts[row["state"]] = row["n"]
    return counts


def settlement_figures(now: dt.datetime | None = None) -> dict[str, float]:
    """Pending settlements, the age of the oldest, the failed ones, and how long the newest
    settled one took from its queueing (the lag a trader saw)."""
    now = now or timezone.now()
    pending = Settlement.objects.filter(status=Settlement.Status.PENDING)
    oldest = pending.order_by("queued_at").values_list("queued_at", flat=True).first()
    last = (
        Settlement.objects.filter(status=Settlement.Status.DONE, settled_at__isnull=False)
        .order_by("-settled_at")
        .values_list("created_at", "settled_at")
        .first()
    )
    return {
        "pending": pending.count(),
        "oldest_pending_seconds": max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        "failed": Settlement.objects.filter(status=Settlement.Status.FAILED).count(),
        "last_lag_seconds": (last[1] - last[0]).total_seconds() if last and last[1] else 0.0,
        "done": Settlement.objects.filter(status=Settlement.Status.DONE).count(),
    }


def seal_lag_seconds(now: dt.datetime | None = None) -> float:
    """How long the oldest committed, unsealed transfer has waited for the sequencer."""
    now = now or timezone.now()
    oldest = (
        Transfer.objects.filter(seq__isnull=True)
        .order_by("id")
        .values_list("created_at", flat=True)
        .first()
    )
    return max((now - oldest).total_seconds(), 0.0) if oldest else 0.0


def checkpoint_figures(now: dt.datetime | None = None) -> dict[str, float]:
    now = now or timezone.now()
    latest = Checkpoint.objects.order_by("-tree_size").values("tree_size", "created_at").first()
    return {
        "age_seconds": (now - latest["created_at"]).total_seconds() if latest else -1.0,
        "tree_size": float(latest["tree_size"]) if latest else 0.0,
        "uncovered_seconds": uncovered_entry_age(now),
    }


def withdrawals_queued() -> int:
    return Withdrawal.objects.filter(status=Withdrawal.Status.REQUESTED).count()


def webhook_failures() -> dict[str, int]:
    """Deliveries given up on, and pending ones that have failed at least once (retrying)."""
    return {
        "failed": WebhookDelivery.objects.filter(status=WebhookDelivery.Status.FAILED).count(),
        "retrying": WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, attempts__gt=0
        ).count(),
    }


def celery_queue_length() -> int | None:
    """Messages waiting in the Celery queue (a Redis list); None when Redis does not answer."""
    try:
        with redis_client() as client:
            return int(client.llen(getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")))
    except Exception:
        return None
