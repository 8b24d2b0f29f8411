"""Moderators at work on a dispute: taking it, asking for evidence, reading its file (audited),
writing in the trade room; always impartial (never on a trade they are a party to)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext

from common.errors import NotFound, ValidationFailed
from common.transactions import durable_atomic
from disputes.models import Dispute
from disputes.services._common import (
    _audit,
    _locked,
    _open_for_changes,
    _require_moderator,
    _tell_parties,
)
from escrow import services as escrow
from escrow import services as escrow_services

logger = logging.getLogger(__name__)


# --- moderators -------------------------------------------------------------------------------


def dispute_assign(*, dispute_id: int, actor: Any) -> Dispute:
    """A moderator takes the dispute (or takes it over from another moderator)."""
    _require_moderator(actor)
    with durable_atomic():
        dispute = _locked(dispute_id)
        escrow.require_impartial_moderator(trade=dispute.trade, actor=actor)
        _open_for_changes(dispute)
        previous = dispute.assigned_to
        dispute.assigned_to = actor
        if dispute.status == Dispute.Status.OPEN:
            dispute.status = Dispute.Status.IN_REVIEW
        dispute.save(update_fields=["assigned_to", "status"])
        _audit(
            actor=actor,
            action="assign",
            dispute=dispute,
            reason=f"from {previous}" if previous else "",
        )
        if previous != actor:
            _tell_parties(dispute, "A moderator is now reviewing this dispute.")
    return dispute


def dispute_request_evidence(
    *, dispute_id: int, actor: Any, party: str, note: str, hours: int = 24
) -> Dispute:
    """A moderator asks a party (or both) for more evidence, with a deadline."""
    _require_moderator(actor)
    if party not in ("buyer", "seller", "both"):
        raise ValidationFailed(
            gettext("party: buyer, seller or both."),
            fields={"party": [gettext("Choose buyer, seller or both.")]},
        )
    note = (note or "").strip()
    if not note:
        raise ValidationFailed(
            gettext("note: say what you need."), fields={"note": [gettext("Say what you need.")]}
        )
    if not 1 <= int(hours) <= 168:
        raise ValidationFailed(
            gettext("hours: 1 to 168."), fields={"hours": [gettext("1 to 168 hours.")]}
        )
    with durable_atomic():
        dispute = _locked(dispute_id)
        escrow.require_impartial_moderator(trade=dispute.trade, actor=actor)
        _open_for_changes(dispute)
        dispute.status = Dispute.Status.AWAITING_EVIDENCE
        dispute.evidence_requested_from = party
        dispute.evidence_note = note[:500]
        dispute.evidence_deadline = timezone.now() + timedelta(hours=int(hours))
        dispute.save(
            update_fields=[
                "status",
                "evidence_requested_from",
                "evidence_note",
                "evidence_deadline",
            ]
        )
        _audit(actor=actor, action="request_evidence", dispute=dispute, reason=f"{party}: {note}")
        who = "both of you" if party == "both" else f"the {party}"
        _tell_parties(
            dispute,
            f"The moderator asks {who} for evidence by {dispute.evidence_deadline:%Y-%m-%d %H:%M} UTC: {note}",
            email=True,
        )
    return dispute


def dispute_file_read(*, dispute_id: int, actor: Any) -> None:
    """Staff read a dispute's file (its chat, evidence and both traders' records): written to
    the append-only moderators' audit, which no moderator can edit."""
    dispute = Dispute.objects.select_related("trade").filter(pk=dispute_id).first()
    if dispute is None:
        raise NotFound(gettext("Dispute #{dispute_id} not found.").format(dispute_id=dispute_id))
    escrow.require_impartial_moderator(trade=dispute.trade, actor=actor)
    _audit(actor=actor, action="read_file", dispute=dispute)


def dispute_moderator_message(*, dispute_id: int, actor: Any, text: str) -> Any:
    """A moderator writes in the trade room's chat, marked as moderator."""
    _require_moderator(actor)
    dispute = Dispute.objects.filter(pk=dispute_id).first()
    if dispute is None:
        raise NotFound(gettext("Dispute #{dispute_id} not found.").format(dispute_id=dispute_id))
    with durable_atomic():
        message = escrow_services.trade_message_send(
            trade_id=dispute.trade_id, actor=actor, text=text, as_moderator=True
        )
        _audit(actor=actor, action="message", dispute=dispute, reason=text[:500])
    return message
