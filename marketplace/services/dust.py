"""Offers that can't be taken any more close themselves: when what is left of an offer can't
cover its minimum, nobody can ever take it, so it leaves the book and quick trade at once (in the
transaction of the take that made it so, or by the periodic sweep for a floating price that
moved), and its maker is told through `offer_closed_listeners`. Topping it up or lowering the
minimum reopens it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext

from common.errors import ValidationFailed
from common.money import fmt, round_half_up
from common.transactions import durable_atomic
from marketplace import book_cache
from marketplace.models import Offer

logger = logging.getLogger(__name__)

# A hook for higher apps (notifications tells the maker): called on commit with each Offer the
# platform closed; a failing listener is logged, never raised into the take that closed it.
offer_closed_listeners: list[Callable[[Offer], None]] = []


def offer_left_value(*, offer: Offer, price: Decimal | None = None) -> Decimal | None:
    """What all that is left of the offer comes to in its fiat at `price` (default: its price
    now, the `effective_price` the services keep in step with the index), rounded as a take of
    it would be; None without a price."""
    price = price if price is not None else offer.effective_price
    if price is None:
        return None
    return round_half_up(offer.available * price, offer.fiat.precision)


def offer_is_dust(*, offer: Offer, price: Decimal | None = None) -> bool:
    """True when no take can fit the offer any more: taking all that is left comes to less than
    its minimum per trade (the rule offer_quantity applies to a take). Nothing left at all is
    dust too. Without a price (a floating offer whose index is gone) nothing can be said."""
    value = offer_left_value(offer=offer, price=price)
    return value is not None and value < offer.min_fiat


def offer_close_if_dust(*, offer: Offer, price: Decimal | None = None) -> bool:
    """Inside the caller's transaction, the offer's row locked: close an active offer that can't
    be taken any more, and tell its maker on commit. True when it closed it."""
    assert transaction.get_connection().in_atomic_block, "closing an offer needs a transaction"
    if not offer.is_active or offer.is_deleted or not offer_is_dust(offer=offer, price=price):
        return False
    offer.is_active = False
    offer.closed_at = timezone.now()
    offer.save(update_fields=["is_active", "closed_at", "updated_at"])
    book_cache.offer_changed(offer)
    for listener in offer_closed_listeners:
        # A default argument binds each listener (mypy cannot type it).
        transaction.on_commit(lambda listener=listener: listener(offer), robust=True)  # type: ignore[misc]
    return True


def offer_reopen_check(*, offer: Offer) -> None:
    """Before an offer the platform closed is resumed: refused, naming what to change, while
    what is left still can't cover its minimum."""
    value = offer_left_value(offer=offer)
    if value is not None and value < offer.min_fiat:
        fiat = offer.fiat
        raise ValidationFailed.for_field(
            "amount",
            gettext(
                "Offer #{pk} has {v1} {code} left, worth {v2} {code2}: less than its minimum of {v3} {code2} per trade. Top it up or lower the minimum to reopen it."
            ).format(
                pk=offer.pk,
                v1=fmt(offer.available, offer.asset.precision),
                code=offer.asset.code,
                v2=fmt(value, fiat.precision),
                code2=fiat.code,
                v3=fmt(offer.min_fiat, fiat.precision),
            ),
        )


def offers_close_dust() -> int:
    """The sweep (beat): close every active offer that can't be taken any more at today's price
    (a floating offer whose price fell, offers left over from before the rule). Candidates by
    their stored price in one query, then each re-checked under its row lock; returns how many
    closed."""
    candidates = list(
        Offer.objects.filter(
            is_active=True,
            is_deleted=False,
            effective_price__isnull=False,
            available__lt=F("min_fiat") / F("effective_price") * 2,  # generous: rechecked below
        ).values_list("pk", flat=True)
    )
    closed = 0
    for offer_id in candidates:
        try:
            with durable_atomic():
                offer = (
                    Offer.objects.select_for_update(of=("self",))
                    .select_related("asset", "fiat")
                    .filter(pk=offer_id)
                    .first()
                )
                if offer is not None and offer_close_if_dust(offer=offer):
                    closed += 1
        except Exception:
            logger.exception("closing offer #%s that can't be taken failed", offer_id)
    return closed
