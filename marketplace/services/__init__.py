"""Every write of the marketplace: offers and taking them (offers.py), the trade room's chat and
feedback (room.py). Import from here."""

from marketplace.services.offers import (
    offer_create,
    offer_delete,
    offer_effective_price,
    offer_match,
    offer_set_active,
    offer_take,
    offer_update,
    price_index_set,
)
from marketplace.services.room import (
    feedback_leave,
    feedback_reply,
    trade_message_send,
    trade_system_note,
)

__all__ = [
    "feedback_leave",
    "feedback_reply",
    "offer_create",
    "offer_delete",
    "offer_effective_price",
    "offer_match",
    "offer_set_active",
    "offer_take",
    "offer_update",
    "price_index_set",
    "trade_message_send",
    "trade_system_note",
]
