"""Reads of offers, the order book and trades."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import (
    Case,
    DecimalField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Round

from common.errors import NotFound
from marketplace.models import Offer, PriceIndex, Trade

_PRICE = DecimalField(max_digits=24, decimal_places=8)


def offers_with_price(qs: QuerySet[Offer] | None = None) -> QuerySet[Offer]:
    """Offers annotated with `effective_price_db`: fixed, or index * (1 + margin/100), in SQL so the
    book sorts and filters by price without loading every offer."""
    qs = qs if qs is not None else Offer.objects.all()
    index = PriceIndex.objects.filter(asset=OuterRef("asset"), fiat=OuterRef("fiat")).values(
        "price"
    )[:1]
    floating = ExpressionWrapper(
        Subquery(index, output_field=_PRICE)
        * (Value(Decimal(1)) + F("margin_percent") / Value(Decimal(100))),
        output_field=_PRICE,
    )
    return qs.annotate(
        effective_price_db=Case(
            When(price_type=Offer.PriceType.FIXED, then=F("price")),
            default=Round(floating, 2),
            output_field=_PRICE,
        )
    )


def offer_book(
    *,
    side: str | None = None,
    asset: str | None = None,
    fiat: str | None = None,
    payment_method: str | None = None,
    fiat_amount: Decimal | None = None,
    min_completion_rate: Decimal | None = None,
    maker_username: str | None = None,
) -> QuerySet[Offer]:
    """Active offers, best price first for the taker: lowest when the maker sells, highest when buying."""
    qs = Offer.objects.filter(is_deleted=False, is_active=True, available__gt=0)
    if side:
        qs = qs.filter(side=side)
    if asset:
        qs = qs.filter(asset__code=asset.upper())
    if fiat:
        qs = qs.filter(fiat__code=fiat.upper())
    if payment_method:
        qs = qs.filter(payment_methods__code=payment_method)
    if fiat_amount is not None:
        qs = qs.filter(min_fiat__lte=fiat_amount, max_fiat__gte=fiat_amount)
    if maker_username:
        qs = qs.filter(maker__username=maker_username)
    qs = offers_with_price(qs).filter(effective_price_db__isnull=False)
    if fiat_amount is not None:
        # Enough left at this price for the amount asked.
        qs = qs.filter(available__gte=fiat_amount / F("effective_price_db"))
    order = "effective_price_db" if side != Offer.Side.BUY else "-effective_price_db"
    return (
        qs.select_related("asset", "fiat", "maker")
        .prefetch_related("payment_methods")
        .order_by(order, "created_at", "pk")
        .distinct()
    )


def offer_get(*, offer_id: int) -> Offer:
    offer = (
        offers_with_price(Offer.objects.filter(pk=offer_id, is_deleted=False))
        .select_related("asset", "fiat", "maker")
        .first()
    )
    if offer is None:
        raise NotFound(f"Offer #{offer_id} not found.")
    return offer


def offer_list_for_user(*, user: Any) -> QuerySet[Offer]:
    return (
        offers_with_price(Offer.objects.filter(maker=user, is_deleted=False))
        .select_related("asset", "fiat")
        .prefetch_related("payment_methods")
    )


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
    from marketplace.models import TradeMessage

    return (
        TradeMessage.objects.filter(trade=trade)
        .select_related("sender")
        .order_by("created_at", "id")
    )


def trade_message_attachment(*, trade_id: int, message_id: int, user: Any) -> Any:
    """A chat attachment for the trade's parties and moderators only; anyone else: not found."""
    from marketplace.models import TradeMessage

    trade = Trade.objects.filter(pk=trade_id).first()
    allowed = trade is not None and (
        trade.role_of(user) is not None or user.has_perm("escrow.decide_trade")
    )
    message = (
        TradeMessage.objects.filter(pk=message_id, trade_id=trade_id).exclude(attachment="").first()
    )
    if not allowed or message is None:
        raise NotFound("Attachment not found.")
    return message
