"""What the dispute services share: the moderators' audit, telling the parties, locking."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils.translation import gettext

from accounts.selectors import is_moderator
from common.errors import InvalidTransition, NotFound, PermissionDenied
from disputes.models import Dispute, ModeratorAction
from escrow import services as escrow_services

logger = logging.getLogger(__name__)


# Who tells the parties about a dispute's news (notifications, a layer above, registers itself in
# its AppConfig.ready()): each is called after commit with trade=, text=, kind=, except_user_id=
# and email=.
party_notice_listeners: list[Callable[..., None]] = []


def _require_moderator(actor: Any) -> None:
    if not is_moderator(actor):
        raise PermissionDenied(gettext("Only a moderator can do this."))


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
        raise NotFound(gettext("Dispute #{dispute_id} not found.").format(dispute_id=dispute_id))
    return dispute


def _open_for_changes(dispute: Dispute) -> None:
    if dispute.status == Dispute.Status.DECIDED:
        raise InvalidTransition(
            gettext("Dispute #{pk} was decided; it can't be changed.").format(pk=dispute.pk)
        )
