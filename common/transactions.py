"""The one transaction a money service runs in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import transaction

from common.models import IdempotencyRecord
from common.prepared import update_by_pk

# The Idempotency-Key record of the API request being served, if any (common.idempotency).
current_idempotency_record: ContextVar[int | None] = ContextVar(
    "current_idempotency_record", default=None
)


@contextmanager
def durable_atomic() -> Iterator[None]:
    """transaction.atomic(durable=True) that, inside a request sent with an Idempotency-Key, marks
    the key's record as carried out in the same transaction: should anything fail after the
    commit (the database, building the response), a retry with that key is told so and never
    repeats the work."""
    with transaction.atomic(durable=True):
        yield
        record_id = current_idempotency_record.get()
        if record_id is not None:
            update_by_pk(IdempotencyRecord, record_id, committed=True)
