"""Lending tasks: each calls one service; the services lock, so overlapping runs do no harm."""

from __future__ import annotations

from celery import shared_task

from lending import services


@shared_task(acks_late=True)
def collect_installments() -> int:
    return services.installments_collect_due()


@shared_task(acks_late=True)
def check_ltv() -> dict[str, int]:
    return services.loans_check_ltv()


@shared_task(acks_late=True)
def sweep_requests() -> int:
    return services.loan_requests_sweep()


@shared_task(acks_late=True)
def default_overdue() -> int:
    return services.loans_default_overdue()
