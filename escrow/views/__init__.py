"""The browser UI of escrow: opening trades, the trade room, traders' public profiles."""

from escrow.views.opening import my_offers, offer_detail, offer_quote, quick_quote, quick_trade
from escrow.views.profile import feedback_reply, trader_profile
from escrow.views.room import (
    PANEL_VERSION,
    RoomAction,
    my_trades,
    room_actions,
    room_panels,
    trade_action,
    trade_chat,
    trade_chat_attachment,
    trade_chat_send,
    trade_detail,
    trade_feedback,
    trade_status,
)

__all__ = [
    "PANEL_VERSION",
    "RoomAction",
    "feedback_reply",
    "my_offers",
    "my_trades",
    "offer_detail",
    "offer_quote",
    "quick_quote",
    "quick_trade",
    "room_actions",
    "room_panels",
    "trade_action",
    "trade_chat",
    "trade_chat_attachment",
    "trade_chat_send",
    "trade_detail",
    "trade_feedback",
    "trade_status",
    "trader_profile",
]
