"""Ledger tasks: load by id, call one service, own only the retry policy."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from ledger import services
from ledger.models import Withdrawal


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=10)
def seal_pending() -> int:
    """The sequencer's beat: publish the checkpoint key (a rotated one shows before it signs),
    seal what is committed, and sign a checkpoint once the oldest unsigned entry has waited."""
    services.signing_key_publish()
    sealed = services.ledger_seal_pending()
    services.ledger_checkpoint_due()
    return sealed


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=10)
def process_withdrawal(withdrawal_id: int) -> str:
    try:
        return services.withdrawal_process(withdrawal_id=withdrawal_id).status
    except Withdrawal.DoesNotExist:
        return "missing"


@shared_task(acks_late=True)
def sweep_withdrawals() -> int:
    """Re-queue withdrawals no worker picked up (a lost broker message loses nothing)."""
    ids = list(
        Withdrawal.objects.filter(status=Withdrawal.Status.REQUESTED).values_list("pk", flat=True)[
            :500
        ]
    )
    for withdrawal_id in ids:
        process_withdrawal.delay(withdrawal_id)
    return len(ids)


# The chain's tasks live beside their code (ledger/evm/): the sequencer and sweeps (tasks.py),
# reconciliation and the proof of reserves (reserves_tasks.py); imported here, where Celery looks.
from ledger.evm.reserves_tasks import publish_reserves_proof as publish_reserves_proof  # noqa: E402
from ledger.evm.reserves_tasks import reconcile_reserves as reconcile_reserves  # noqa: E402
from ledger.evm.tasks import run_sequencer as run_sequencer  # noqa: E402
from ledger.evm.tasks import run_sweeps as run_sweeps  # noqa: E402


# --- the chain's deposit watcher (ledger/evm/deposits.py) ---
@shared_task
def watch_deposits() -> dict[str, int | bool | None]:
    """One run of the deposit watcher. Beat sends one every EVM_WATCH_SECONDS; a run that finds
    another one still going (the advisory lock) returns at once, so overlapping runs do no harm."""
    from ledger.evm.deposits import deposits_watch

    result = deposits_watch()
    return {
        "busy": result.busy,
        "tip": result.tip,
        "scanned": result.scanned,
        "seen": result.seen,
        "credited": result.credited,
        "dropped": result.dropped,
    }


# --- end deposit watcher ---
