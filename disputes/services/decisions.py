"""Deciding a dispute: release, refund or split, settled through escrow exactly once; above
DISPUTE_FOUR_EYES_EUR proposed by one moderator and approved by another (four eyes)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext

from accounts import services as accounts
from common.errors import InvalidTransition, PermissionDenied, ValidationFailed
from common.money import fmt, parse_amount
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
from escrow.models import Trade
from escrow.selectors.stats import trade_value_eur

logger = logging.getLogger(__name__)


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
            gettext("reason: both parties read it; explain the decision (at least 10 characters)."),
            fields={"reason": [gettext("Explain the decision (at least 10 characters).")]},
        )
    if outcome not in Dispute.Outcome.values:
        raise ValidationFailed(
            gettext("outcome: release, refund or split."),
            fields={"outcome": [gettext("Choose an outcome.")]},
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
                    gettext("buyer_amount: a split needs the buyer's share."),
                    fields={"buyer_amount": [gettext("Required for a split.")]},
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
            raise InvalidTransition(
                gettext("Dispute #{pk} has no decision awaiting approval.").format(pk=dispute.pk)
            )
        if dispute.proposed_by_id == actor.pk:
            raise PermissionDenied(
                gettext("Another moderator must approve your own proposal (four eyes)."),
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
            raise InvalidTransition(
                gettext("Dispute #{pk} has no decision awaiting approval.").format(pk=dispute.pk)
            )
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
