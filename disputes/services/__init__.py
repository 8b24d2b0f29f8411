"""Disputes: opening, moderator steps, evidence and the decision. The escrow moves go through
escrow.services (escrow_dispute, escrow_decide) inside these services' transactions; this app
never sets a trade state itself. Every moderator step is written to the audit log."""

from disputes.services._common import (
    party_notice_listeners,
)
from disputes.services.decisions import (
    dispute_approve,
    dispute_decide,
    dispute_send_back,
    needs_second_moderator,
)
from disputes.services.moderators import (
    dispute_assign,
    dispute_file_read,
    dispute_moderator_message,
    dispute_request_evidence,
)
from disputes.services.parties import (
    dispute_open,
    evidence_submit,
)

__all__ = [
    "dispute_approve",
    "dispute_assign",
    "dispute_decide",
    "dispute_file_read",
    "dispute_moderator_message",
    "dispute_open",
    "dispute_request_evidence",
    "dispute_send_back",
    "evidence_submit",
    "needs_second_moderator",
    "party_notice_listeners",
]
