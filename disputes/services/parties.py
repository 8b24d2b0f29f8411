"""The parties' side: opening a dispute (the trade moves to `disputed` in the same transaction)
and submitting evidence."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.utils.translation import gettext

from common.errors import NotFound, ValidationFailed
from common.files import check_upload, name_for_type
from common.transactions import durable_atomic
from disputes.models import Dispute, Evidence
from disputes.services._common import (
    _locked,
    _open_for_changes,
    _tell_parties,
)
from escrow import services as escrow

logger = logging.getLogger(__name__)


# --- parties ----------------------------------------------------------------------------------


def dispute_open(*, trade_id: int, actor: Any, category: str, text: str) -> Dispute:
    """A party opens a dispute: the trade moves to `disputed` and the dispute is recorded, together."""
    if category not in Dispute.Category.values:
        raise ValidationFailed(
            gettext("category: choose a reason."),
            fields={"category": [gettext("Choose a reason.")]},
        )
    text = (text or "").strip()
    if len(text) < 10:
        raise ValidationFailed(
            gettext("text: describe what happened (at least 10 characters)."),
            fields={"text": [gettext("Describe what happened (at least 10 characters).")]},
        )
    with durable_atomic():
        label = Dispute.Category(category).label
        trade = escrow.escrow_dispute(
            trade_id=trade_id, actor=actor, reason=f"Dispute: {label}"[:200]
        )
        dispute = Dispute.objects.create(
            trade=trade, opened_by=actor, category=category, text=text[:4000]
        )
        _tell_parties(
            dispute,
            f"{actor.username} opened a dispute ({label}). The crypto stays in "
            f"escrow until a moderator decides; both of you can add evidence.",
            email=True,
        )
    return dispute


def evidence_submit(
    *, dispute_id: int, actor: Any, statement: str = "", file: Any = None
) -> Evidence:
    """A party adds a statement and/or a file (type sniffed from content) until the decision."""
    statement = (statement or "").strip()
    if not statement and file is None:
        raise ValidationFailed(
            gettext("statement: write a statement or attach a file."),
            fields={"statement": [gettext("Required.")]},
        )
    content_type = ""
    if file is not None:
        content_type = check_upload(
            file,
            field="file",
            allowed=settings.EVIDENCE_TYPES,
            max_bytes=settings.EVIDENCE_MAX_BYTES,
        )
    with durable_atomic():
        dispute = _locked(dispute_id)
        if dispute.trade.role_of(actor) is None:
            raise NotFound(
                gettext("Dispute #{dispute_id} not found.").format(dispute_id=dispute_id)
            )
        _open_for_changes(dispute)
        evidence = Evidence(
            dispute=dispute,
            uploaded_by=actor,
            statement=statement[:4000],
            content_type=content_type,
        )
        if file is not None:
            evidence.file_name = str(getattr(file, "name", "evidence"))[:200]
            evidence.file.save(
                name_for_type(f"dispute-{dispute.pk}", content_type), file, save=False
            )
        evidence.save()
        if dispute.status == Dispute.Status.AWAITING_EVIDENCE:
            dispute.status = (
                Dispute.Status.IN_REVIEW if dispute.assigned_to_id else Dispute.Status.OPEN
            )
            dispute.save(update_fields=["status"])
        _tell_parties(dispute, f"{actor.username} added evidence.", except_user_id=actor.pk)
    return evidence
