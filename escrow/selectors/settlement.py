"""Reads of escrow rows that other apps and screens need (the trade room, the admin index)."""

from __future__ import annotations

from escrow.models import Settlement


def settlement_status_for_trade(*, trade_id: int) -> str | None:
    """The status of the trade's settlement (pending, done or failed); None until one is queued."""
    return Settlement.objects.filter(trade_id=trade_id).values_list("status", flat=True).first()


def settlement_failed_count() -> int:
    """How many settlements wait for a moderator (the partial index settlement_failed)."""
    return Settlement.objects.filter(status=Settlement.Status.FAILED).count()
