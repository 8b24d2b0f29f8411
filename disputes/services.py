"""Disputes: opening, moderator steps, evidence and the decision. The escrow moves go through
escrow.services (escrow_dispute, escrow_decide) inside these services' transactions; this app
never sets a trade state itself. Every moderator step is written to the audit log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import services as accounts
from accounts.selectors import is_moderator
from common.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from common.files import check_upload, name_for_type
from common.money import fmt, parse_amount
from common.transactions import durable_atomic
from disputes.models import Dispute, Evidence, ModeratorAction
from escrow import services as escrow
from escrow import services as escrow_services
from escrow.models import Trade
from escrow.selectors.stats import trade_value_eur

logger = logging.getLogger(__name__)


# Who tells the parties about a dispute's news (notifications, a layer above, registers itself in
# its AppConfig.ready()): each is called after commit with trade=, text=, kind=, except_user_id=
# and email=.
party_notice_listeners: list[Callable[..., None]] = []


def _require_moderator(actor: Any) -> None:
    if not is_moderator(actor):
        raise PermissionDenied("Only a moderator can do this.")


def _audit(*, actor: Any, action: str, dispute: Dispute, reason: str = "") -> None:
    ModeratorAction.objects.create(
        actor=actor,
        action=action,
        dispute=dispute,
        target=f"trade #{dispute.trade_id}",
        reason=reason,
    )


def _tell_parties(
    dispute: Dispute, text: str, *, email: bool = False, except_user_id: int | None = None
) -> None:
    """A note in the trade room now, and a notification to both parties once committed."""
    escrow_services.trade_system_note(trade_id=dispute.trade_id, text=text)

    def notify() -> None:
        for listener in party_notice_listeners:
            listener(
                trade=dispute.trade,
                text=text,
                kind="disputed",
                except_user_id=except_user_id,
                email=email,
            )

    transaction.on_commit(notify, robust=True)


def _locked(dispute_id: int) -> Dispute:
    dispute = (
        Dispute.objects.select_for_update(of=("self",))
        .select_related("trade")
        .filter(pk=dispute_id)
        .first()
    )
    if dispute is None:
        raise NotFound(f"Dispute #{dispute_id} not found.")
    return dispute


def _open_for_changes(dispute: Dispute) -> None:
    if dispute.status == Dispute.Status.DECIDED:
        raise InvalidTransition(f"Dispute #{dispute.pk} was decided; it can't be changed.")


# --- parties ----------------------------------------------------------------------------------


def dispute_open(*, trade_id: int, actor: Any, category: str, text: str) -> Dispute:
    """A party opens a dispute: the trade moves to `disputed` and the dispute is recorded, together."""
    if category not in Dispute.Category.values:
        raise ValidationFailed(
            "category: choose a reason.", fields={"category": ["Choose a reason."]}
        )
    text = (text or "").strip()
    if len(text) < 10:
        raise ValidationFailed(
            "text: describe what happened (at least 10 characters).",
            fields={"text": ["Describe what happened (at least 10 characters)."]},
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
            "statement: write a statement or attach a file.", fields={"statement": ["Required."]}
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
            raise NotFound(f"Dispute #{dispute_id} not found.")
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
            "party: buyer, seller or both.", fields={"party": ["Choose buyer, seller or both."]}
        )
    note = (note or "").strip()
    if not note:
        raise ValidationFailed("note: say what you need.", fields={"note": ["Say what you need."]})
    if not 1 <= int(hours) <= 168:
        raise ValidationFailed("hours: 1 to 168.", fields={"hours": ["1 to 168 hours."]})
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
        raise NotFound(f"Dispute #{dispute_id} not found.")
    escrow.require_impartial_moderator(trade=dispute.trade, actor=actor)
    _audit(actor=actor, action="read_file", dispute=dispute)


def dispute_moderator_message(*, dispute_id: int, actor: Any, text: str) -> Any:
    """A moderator writes in the trade room's chat, marked as moderator."""
    _require_moderator(actor)
    dispute = Dispute.objects.filter(pk=dispute_id).first()
    if dispute is None:
        raise NotFound(f"Dispute #{dispute_id} not found.")
    with durable_atomic():
        message = escrow_services.trade_message_send(
            trade_id=dispute.trade_id, actor=actor, text=text, as_moderator=True
        )
        _audit(actor=actor, action="message", dispute=dispute, reason=text[:500])
    return message


def dispute_decide(
    *,
    dispute_id: int,
    actor: Any,
    outcome: str,
    reason: str,
    buyer_amount: Any = None,
    penalize_loser: bool = False,
    suspend_days: int = 0,
) -> Dispute:
    """The decision: release to the buyer, refund the seller or split; it settles through escrow
    and the ledger like any release, exactly once, and can't be changed afterwards. Above
    DISPUTE_FOUR_EYES_EUR it is only proposed: another moderator approves it (four eyes)."""
    _require_moderator(actor)
    reason = (reason or "").strip()
    if len(reason) < 10:
        raise ValidationFailed(
            "reason: both parties read it; explain the decision (at least 10 characters).",
            fields={"reason": ["Explain the decision (at least 10 characters)."]},
        )
    if outcome not in Dispute.Outcome.values:
        raise ValidationFailed(
            "outcome: release, refund or split.", fields={"outcome": ["Choose an outcome."]}
        )
    with durable_atomic():
        dispute = _locked(dispute_id)
        escrow.require_impartial_moderator(trade=dispute.trade, actor=actor)
        _open_for_changes(dispute)
        trade: Trade = dispute.trade
        share = None
        if outcome == Dispute.Outcome.SPLIT:
            if buyer_amount in (None, ""):
                raise ValidationFailed(
                    "buyer_amount: a split needs the buyer's share.",
                    fields={"buyer_amount": ["Required for a split."]},
                )
            share = parse_amount(
                buyer_amount, precision=trade.asset.precision, field="buyer_amount"
            )
        dispute.outcome = outcome
        dispute.buyer_amount = share
        dispute.decision_reason = reason
        dispute.penalize_loser = penalize_loser
        dispute.suspend_days = suspend_days
        if needs_second_moderator(dispute):
            dispute.status = Dispute.Status.AWAITING_APPROVAL
            dispute.proposed_by = actor
            dispute.proposed_at = timezone.now()
            dispute.save(
                update_fields=[
                    "status",
                    "outcome",
                    "buyer_amount",
                    "decision_reason",
                    "penalize_loser",
                    "suspend_days",
                    "proposed_by",
                    "proposed_at",
                ]
            )
            _audit(actor=actor, action=f"propose_{outcome}", dispute=dispute, reason=reason)
            _tell_parties(
                dispute, "A decision was proposed; a second moderator reviews it before it settles."
            )
            return dispute
        _settle_decision(dispute, decided_by=actor, approved_by=None)
    return dispute


def needs_second_moderator(dispute: Dispute) -> bool:
    """Four eyes: a trade worth more than DISPUTE_FOUR_EYES_EUR (in EUR, as limits count it)."""
    trade: Trade = dispute.trade
    value = trade_value_eur(
        asset=trade.asset, fiat=trade.fiat, amount=trade.amount, fiat_amount=trade.fiat_amount
    )
    return bool(value > settings.DISPUTE_FOUR_EYES_EUR)


def dispute_approve(*, dispute_id: int, actor: Any) -> Dispute:
    """A second, impartial moderator approves a proposed decision: it settles now."""
    _require_moderator(actor)
    with durable_atomic():
        dispute = _locked(dispute_id)
        escrow.require_impartial_moderator(trade=dispute.trade, actor=actor)
        if dispute.status != Dispute.Status.AWAITING_APPROVAL:
            raise InvalidTransition(f"Dispute #{dispute.pk} has no decision awaiting approval.")
        if dispute.proposed_by_id == actor.pk:
            raise PermissionDenied(
                "Another moderator must approve your own proposal (four eyes).",
                code="four_eyes",
            )
        _audit(actor=actor, action=f"approve_{dispute.outcome}", dispute=dispute)
        _settle_decision(dispute, decided_by=dispute.proposed_by, approved_by=actor)
    return dispute


def dispute_send_back(*, dispute_id: int, actor: Any, reason: str) -> Dispute:
    """A second moderator disagrees with a proposed decision: it goes back to review."""
    _require_moderator(actor)
    with durable_atomic():
        dispute = _locked(dispute_id)
        escrow.require_impartial_moderator(trade=dispute.trade, actor=actor)
        if dispute.status != Dispute.Status.AWAITING_APPROVAL:
            raise InvalidTransition(f"Dispute #{dispute.pk} has no decision awaiting approval.")
        dispute.status = Dispute.Status.IN_REVIEW
        dispute.proposed_by = None
        dispute.proposed_at = None
        dispute.outcome = ""
        dispute.buyer_amount = None
        dispute.save(
            update_fields=["status", "proposed_by", "proposed_at", "outcome", "buyer_amount"]
        )
        _audit(actor=actor, action="send_back", dispute=dispute, reason=reason)
    return dispute


def _settle_decision(dispute: Dispute, *, decided_by: Any, approved_by: Any) -> None:
    """Inside the caller's transaction, the dispute locked: settle the recorded decision."""
    trade: Trade = dispute.trade
    outcome, share, reason = dispute.outcome, dispute.buyer_amount, dispute.decision_reason
    escrow.escrow_decide(
        trade_id=trade.pk,
        actor=decided_by,
        outcome=outcome,
        reason=reason[:200],
        buyer_amount=share,
    )
    dispute.status = Dispute.Status.DECIDED
    dispute.decided_by = decided_by
    dispute.approved_by = approved_by
    dispute.decided_at = timezone.now()
    dispute.save(
        update_fields=[
            "status",
            "outcome",
            "buyer_amount",
            "decision_reason",
            "decided_by",
            "approved_by",
            "decided_at",
        ]
    )
    _audit(actor=decided_by, action=f"decide_{outcome}", dispute=dispute, reason=reason)
    loser = {"release": trade.seller, "refund": trade.buyer}.get(outcome)
    if dispute.penalize_loser and loser is not None:
        accounts.profile_penalize(
            user=loser,
            actor=decided_by,
            reason=f"lost dispute #{dispute.pk}",
            suspend_days=dispute.suspend_days,
        )
        _audit(
            actor=decided_by,
            action="penalize",
            dispute=dispute,
            reason=f"{loser.username}: strike, suspended {dispute.suspend_days} days",
        )
    summary = {
        "release": f"the {trade.asset.code} is released to {trade.buyer.username}",
        "refund": f"the {trade.asset.code} goes back to {trade.seller.username}",
        "split": f"{trade.buyer.username} receives "
        f"{fmt(share, trade.asset.precision) if share else '0'} {trade.asset.code}, "
        f"the rest goes back to {trade.seller.username}",
    }[outcome]
    _tell_parties(dispute, f"Dispute decided: {summary}. Reason: {reason}", email=True)
