"""The reserves' beat tasks (config/settings/base.py RESERVES): thin, the rules are in
ledger.evm.reserves. Both do nothing while no asset is on the chain."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from ledger.evm import reserves


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def reconcile_reserves() -> dict[str, str]:
    """Each asset on the chain: holdings against liabilities; a shortfall alerts moderators."""
    return {row.asset.code: row.status for row in reserves.reserves_reconcile()}


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def publish_reserves_proof() -> dict[str, int]:
    """Each asset on the chain: a signed proof of reserves."""
    return {proof.asset.code: proof.pk for proof in reserves.reserves_proof_publish()}
