"""Reads of disputes and evidence, with who-may-see-what in one place."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from accounts.selectors import is_moderator
from common.errors import NotFound
from disputes.models import Dispute, Evidence


def dispute_get_for_user(*, dispute_id: int, user: Any) -> Dispute:
    dispute = (
        Dispute.objects.select_related("trade", "assigned_to", "opened_by")
        .filter(pk=dispute_id)
        .first()
    )
    if dispute is None or (dispute.trade.role_of(user) is None and not is_moderator(user)):
        raise NotFound(gettext("Dispute #{dispute_id} not found.").format(dispute_id=dispute_id))
    return dispute


def dispute_for_trade(*, trade_id: int) -> Dispute | None:
    return Dispute.objects.select_related("assigned_to").filter(trade_id=trade_id).first()


def evidence_list(*, dispute: Dispute) -> QuerySet[Evidence]:
    return dispute.evidence.select_related("uploaded_by").order_by("created_at", "id")


def evidence_file_for_user(*, evidence_id: int, user: Any) -> Evidence:
    """An evidence file for the dispute's parties and moderators only; anyone else: not found."""
    evidence = (
        Evidence.objects.select_related("dispute__trade")
        .filter(pk=evidence_id)
        .exclude(file="")
        .first()
    )
    if evidence is None or (
        evidence.dispute.trade.role_of(user) is None and not is_moderator(user)
    ):
        raise NotFound(gettext("Evidence not found."))
    return evidence


def assigned_moderator_reads(trade: Any, user: Any) -> bool:
    """A moderator reads a trade (its room, its chat) once assigned to its dispute, and only if
    no party to it."""
    return (
        trade.role_of(user) is None
        and Dispute.objects.filter(trade_id=trade.pk, assigned_to_id=user.pk).exists()
    )


def dispute_queue_counts(*, now: datetime | None = None) -> dict[str, int]:
    """The moderators' queue in one query: disputes not yet decided, and those of them older than
    the SLA (DISPUTE_SLA_HOURS), as the console's "Past SLA" filter counts them."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.DISPUTE_SLA_HOURS)
    return Dispute.objects.exclude(status=Dispute.Status.DECIDED).aggregate(
        open=Count("id"), past_sla=Count("id", filter=Q(created_at__lt=cutoff))
    )
