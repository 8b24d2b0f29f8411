"""Escrow tasks: load by id, call one service, own only the retry policy."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from escrow import services
from escrow.models import Settlement


@shared_task(
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def settle(settlement_id: int) -> str:
    # Database hiccups are retried; anything else is left to the sweeper, which re-queues
    # every settlement still pending after SETTLEMENT_REQUEUE_AFTER.
    try:
        return services.settlement_execute(settlement_id=settlement_id).status
    except Settlement.DoesNotExist:
        return "missing"


@shared_task(acks_late=True)
def sweep_settlements() -> int:
    return services.settlements_requeue_stale()


@shared_task(acks_late=True)
def expire_overdue_trades() -> int:
    return services.trades_expire_overdue()
