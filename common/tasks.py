"""common's beat tasks: each calls one service."""

from __future__ import annotations

from celery import shared_task

from common import services


@shared_task(ignore_result=True)
def idempotency_records_prune() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): expired Idempotency-Key records go."""
    return services.idempotency_records_prune()
