"""Hooks into escrow.services.transition_listeners (called on commit of each transition)."""

from __future__ import annotations

import logging

from escrow.models import EscrowEvent
from escrow.services import transition_listeners
from marketplace.models import Trade

logger = logging.getLogger(__name__)


def on_trade_transition(trade: Trade, event: EscrowEvent) -> None:
    # Runs after the trade's transaction committed, in the caller's request or task: whatever
    # goes wrong here is logged, never raised into a transition that already happened.
    from notifications.services import notify_trade_event

    try:
        notify_trade_event(trade=trade, event=event)
    except Exception:
        logger.exception("notifications for trade #%s (%s) failed", trade.pk, event.new_state)


if on_trade_transition not in transition_listeners:
    transition_listeners.append(on_trade_transition)
