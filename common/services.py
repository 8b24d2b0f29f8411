"""The few writes common owns: pruning expired Idempotency-Key records."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from common.idempotency import ttl
from common.models import IdempotencyRecord

PRUNE_BATCH_SIZE = 1000


def idempotency_records_prune(
    *, batch_size: int = PRUNE_BATCH_SIZE, now: datetime | None = None
) -> int:
    """Delete the records older than IDEMPOTENCY_TTL_HOURS, a batch per statement so no
    delete holds many row locks for long; returns how many went."""
    cutoff = (now or timezone.now()) - ttl()
    deleted = 0
    while True:
        batch = list(
            IdempotencyRecord.objects.filter(created_at__lt=cutoff)
            .order_by("created_at", "pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not batch:
            return deleted
        deleted += IdempotencyRecord.objects.filter(pk__in=batch).delete()[0]
