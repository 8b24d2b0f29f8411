"""Escrow tasks: load by id, call one service, own only the retry policy."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from escrow import services

# Database hiccups (a lost connection, a lock timeout) are retried with backoff, without end.
SETTLE_RETRY: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": services.TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": None,
}


@shared_task(**SETTLE_RETRY)
def settle(settlement_id: int) -> int:
    # Messages published before settle_many (in a broker during a deploy).
    # Database hiccups (a lost connection, a lock timeout) are retried with backoff; a settlement
    # whose posting fails is counted by the service and left pending for the sweeper, which
    # re-queues it after SETTLEMENT_REQUEUE_AFTER, until it is failed for a moderator.
    return services.settlement_execute(
        settlement_id=settlement_id, batch_size=settings.SETTLEMENT_BATCH_SIZE
    )


@shared_task(
    **SETTLE_RETRY,
    # common.outbox holds a message open for 0.2 s for more releases' ids (of 2 s of settlement
    # lag the load test allows at its p99): under load one task settles many releases.
    outbox_coalesce=0.2,
)
def settle_many(settlement_ids: list[int]) -> int:
    # The releases' message (common.outbox merges their ids); retried as settle is.
    return services.settlements_execute_many(
        settlement_ids=settlement_ids, batch_size=settings.SETTLEMENT_BATCH_SIZE
    )


@shared_task(acks_late=True)
def settle_pending() -> int:
    """Beat's catch-up: settle whatever is pending in batches (after an outage, a backlog)."""
    total = 0
    while settled := services.settlements_execute_pending(
        batch_size=settings.SETTLEMENT_BATCH_SIZE
    ):
        total += settled
    return total


@shared_task(acks_late=True)
def sweep_settlements() -> int:
    return services.settlements_requeue_stale()


@shared_task(acks_late=True)
def expire_overdue_trades() -> int:
    return services.trades_expire_overdue()


@shared_task(acks_late=True)
def fold_trader_counts() -> int:
    return services.trader_counts_fold()
