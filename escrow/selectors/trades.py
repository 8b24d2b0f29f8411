"""Reads of trades for their parties and moderators: lists, one trade, its chat."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from accounts.selectors import is_moderator
from common.errors import NotFound
from escrow.models import Trade, TradeMessage


def trade_list_for_user(*, user: Any, state: str | None = None) -> QuerySet[Trade]:
    qs = Trade.objects.filter(Q(buyer=user) | Q(seller=user)).select_related(
        "asset", "fiat", "buyer", "seller", "payment_method"
    )
    if state:
        qs = qs.filter(state=state)
    return qs.order_by("-created_at", "-pk")


def trade_get_for_user(*, trade_id: int, user: Any) -> Trade:
    """A trade its parties (or staff) may see; anyone else gets not-found, not a hint it exists."""
    trade = (
        Trade.objects.select_related("asset", "fiat", "buyer", "seller", "offer", "payment_method")
        .filter(pk=trade_id)
        .first()
    )
    if trade is None or (trade.role_of(user) is None and not user.is_staff):
        raise NotFound(f"Trade #{trade_id} not found.")
    return trade


def trade_messages(*, trade: Trade) -> QuerySet[Any]:
    return (
        TradeMessage.objects.filter(trade=trade)
        .select_related("sender")
        .order_by("created_at", "id")
    )


def trade_message_attachment(*, trade_id: int, message_id: int, user: Any) -> Any:
    """A chat attachment for the trade's parties and moderators only; anyone else: not found."""
    trade = Trade.objects.filter(pk=trade_id).first()
    allowed = trade is not None and (trade.role_of(user) is not None or is_moderator(user))
    message = (
        TradeMessage.objects.filter(pk=message_id, trade_id=trade_id).exclude(attachment="").first()
    )
    if not allowed or message is None:
        raise NotFound("Attachment not found.")
    return message
