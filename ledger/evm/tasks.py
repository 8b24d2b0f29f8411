"""The chain's tasks (imported by ledger/tasks.py, which Celery discovers): thin; the rules are in
sequencer.py and sweeps.py. Both take the chain's advisory lock: a second run at the same time
returns at once."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from ledger.evm.config import enabled


# Celery's decorator is untyped (pyproject allows it in ledger.tasks; here, line by line).
@shared_task(  # type: ignore[untyped-decorator]
    acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5
)
def run_sequencer() -> dict[str, object]:
    """Follow the chain's outgoing transactions and send the queued withdrawals."""
    if not enabled():
        return {"skipped": True}
    from ledger.evm.sequencer import sequencer_run

    return sequencer_run().__dict__


# Celery's decorator is untyped (pyproject allows it in ledger.tasks; here, line by line).
@shared_task(  # type: ignore[untyped-decorator]
    acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5
)
def run_sweeps() -> dict[str, object]:
    """Move what deposit addresses hold to the hot wallet (topping up gas for tokens)."""
    if not enabled():
        return {"skipped": True}
    from ledger.evm.sweeps import sweeps_run

    return sweeps_run().__dict__
