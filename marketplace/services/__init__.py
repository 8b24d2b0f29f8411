"""Every write of the marketplace: the price index and its feed (services.prices), offers, and an
offer's part in a take (locking, quantity, payment method, reservation; escrow.services.trade_open
opens the trade). Import from here."""

from marketplace.services.dust import (
    offer_close_if_dust,
    offer_closed_listeners,
    offer_is_dust,
    offer_left_value,
    offers_close_dust,
)
from marketplace.services.offers import (
    offer_changed_listeners,
    offer_create,
    offer_delete,
    offer_effective_price,
    offer_set_active,
    offer_update,
    price_index_set,
    price_listeners,
    price_stale_listeners,
)
from marketplace.services.prices import (
    price_median,
    price_pair_mark_stale,
    prices_refresh,
)
from marketplace.services.taking import (
    offer_lock_for_taking,
    offer_payment_method,
    offer_quantity,
    offer_reserve,
)

__all__ = [
    "offer_changed_listeners",
    "offer_close_if_dust",
    "offer_closed_listeners",
    "offer_create",
    "offer_delete",
    "offer_effective_price",
    "offer_is_dust",
    "offer_left_value",
    "offer_lock_for_taking",
    "offer_payment_method",
    "offer_quantity",
    "offer_reserve",
    "offer_set_active",
    "offer_update",
    "offers_close_dust",
    "price_index_set",
    "price_listeners",
    "price_median",
    "price_pair_mark_stale",
    "price_stale_listeners",
    "prices_refresh",
]
