"""An offer's part in a take: locked, its quantity at today's price within its limits, its payment
method, and what is left lowered; escrow.services.trade_open opens the trade around these."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils.translation import gettext

from accounts.selectors import (
    blocked_ids_cached,
)
from common.errors import Conflict, NotFound, ValidationFailed
from common.money import fmt, fmt_fiat, parse_amount, quantum, round_down, round_half_up
from common.prepared import PreparedRead, save_fields
from marketplace import book_cache
from marketplace.currencies import parse_fiat_amount
from marketplace.models import Offer, PaymentMethod
from marketplace.services.dust import offer_close_if_dust
from marketplace.services.offers import offer_effective_price

# --- taking an offer (escrow.services.trade_open opens the trade; these are the offer's part) ---


# The offer a take locks, with what the trade copies of it (common.prepared: built once).
_OFFER_LOCKED = PreparedRead(
    lambda offer_id: (
        Offer.objects.select_for_update(of=("self",))
        .select_related("asset", "fiat", "maker")
        .filter(pk=offer_id, is_deleted=False)
    )
)


# The methods an offer accepts, as offer.payment_methods.all() (common.prepared).
_OFFER_METHODS = PreparedRead(lambda offer_id: PaymentMethod.objects.filter(offers=offer_id))


def offer_lock_for_taking(*, offer_id: int, taker: Any) -> Offer:
    """Inside the caller's transaction: the offer's row locked (every take of it queues here, so
    it is never oversold), refused when it is the taker's own, paused, gone, or its maker and the
    taker blocked each other (then it doesn't exist for them: not a hint that it does)."""
    assert transaction.get_connection().in_atomic_block, "taking an offer needs a transaction"
    offer = _OFFER_LOCKED.first(int(offer_id))
    # The taker's blocked set from the cache (its version moves when a block commits), as the
    # book reads it: the same answer as the book the taker saw, without a query.
    if offer is None or (
        offer.maker_id != taker.pk and offer.maker_id in blocked_ids_cached(user_id=taker.pk)
    ):
        raise NotFound(gettext("Offer #{offer_id} not found.").format(offer_id=offer_id))
    if offer.maker_id == taker.pk:
        raise ValidationFailed.for_field("offer", gettext("You cannot take your own offer."))
    if not offer.is_active and offer.closed_at is not None:
        raise Conflict(
            gettext("Offer #{pk} is closed: too little is left of it to take.").format(pk=offer.pk),
            code="offer_exhausted",
        )
    if not offer.is_active:
        raise Conflict(
            gettext("Offer #{pk} is paused and can't be taken.").format(pk=offer.pk),
            code="offer_paused",
        )
    return offer


def offer_quantity(
    *, offer: Offer, amount: Any, fiat_amount: Any
) -> tuple[Decimal, Decimal, Decimal, str]:
    """What a take of `amount` (in the asset) or `fiat_amount` comes to at the offer's price now:
    (asset amount, fiat amount, price, the field the taker gave), within the offer's limits and
    what it has left."""
    asset, fiat = offer.asset, offer.fiat
    price = offer_effective_price(offer)
    if price is None or price <= 0:
        raise Conflict(
            gettext("Offer #{pk} has no price right now: its price index is missing.").format(
                pk=offer.pk
            )
        )
    if amount not in (None, ""):
        qty = parse_amount(amount, precision=asset.precision, field="amount")
        fiat_total = round_half_up(qty * price, fiat.precision)
    else:
        # A quantity bought for a fiat amount is quantized to the asset's display places (ETH 6),
        # rounded down: no trade carries 18 digits of division noise. The fiat amount stays what
        # the taker gave; amount x price <= fiat_amount < (amount + one display unit) x price,
        # the rounding (under one display unit) staying with whoever sells the asset.
        places = asset.display_places
        fiat_total = parse_fiat_amount(fiat_amount, fiat=fiat, field="fiat_amount")
        qty = round_down(fiat_total / price, places)
        if qty <= 0:
            raise ValidationFailed.for_field(
                "fiat_amount",
                gettext(
                    "That buys less than {v1} {code}, the smallest amount traded for a fiat amount."
                ).format(v1=fmt(quantum(places), places), code=asset.code),
            )
    field = "amount" if amount not in (None, "") else "fiat_amount"
    if not offer.min_fiat <= fiat_total <= offer.max_fiat:
        raise ValidationFailed.for_field(
            field,
            gettext(
                "This offer trades {v1} – {v2} {code} per trade; you asked for {v3} {code}."
            ).format(
                v1=fmt_fiat(offer.min_fiat, fiat.precision),
                v2=fmt_fiat(offer.max_fiat, fiat.precision),
                code=fiat.code,
                v3=fmt_fiat(fiat_total, fiat.precision),
            ),
        )
    if qty > offer.available:
        raise Conflict(
            gettext("Only {v1} {code} is left on offer #{pk}.").format(
                v1=fmt(offer.available, asset.precision), code=asset.code, pk=offer.pk
            ),
            fields={field: [gettext("More than the offer has left.")]},
            code="offer_exhausted",
        )
    return qty, fiat_total, price, field


def offer_payment_method(*, offer: Offer, code: str | None) -> PaymentMethod | None:
    """The payment method a take uses: the one asked for, which the offer must accept, else the
    offer's first."""
    methods = {m.code: m for m in _OFFER_METHODS(offer.pk)}
    if code:
        if code not in methods:
            raise ValidationFailed.for_field(
                "payment_method", gettext("This offer doesn't accept {code!r}.").format(code=code)
            )
        return methods[code]
    return next(iter(methods.values()), None)


def offer_reserve(*, offer: Offer, amount: Decimal, price: Decimal | None = None) -> None:
    """Lower what is left of a locked offer by a take's amount (its CHECK keeps it >= 0); when
    what is left can't cover the offer's minimum any more (at the take's `price`), the offer
    closes in the same transaction and its maker is told on commit."""
    offer.available -= amount
    save_fields(offer, ["available", "updated_at"])
    offer_close_if_dust(offer=offer, price=price)  # a close bumps the book's version
    book_cache.offer_taken(offer)
