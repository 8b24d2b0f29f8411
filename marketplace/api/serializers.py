"""Output shapes of offers, shared by every endpoint that returns them."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.selectors import TraderStats, is_online
from common.money import fmt
from marketplace.models import Offer
from marketplace.selectors import maker_name


@extend_schema_field({"type": "string", "example": "0.01500000", "pattern": r"^-?\d+(\.\d+)?$"})
class AmountOut(serializers.Field):
    """A Decimal as a string at a precision taken from the object (asset's, fiat's, or fixed)."""

    def __init__(self, *, precision: str | int, source: str | None = None, **kwargs: Any) -> None:
        self.precision = precision
        kwargs["read_only"] = True
        super().__init__(source=source, **kwargs)

    def get_attribute(self, instance: Any) -> Any:
        self._instance = instance
        return super().get_attribute(instance)

    def to_representation(self, value: Any) -> str | None:
        if value is None:
            return None
        precision = self.precision
        if isinstance(precision, str):
            obj = self._instance
            for part in precision.split("."):
                obj = getattr(obj, part)
            precision = obj
        return fmt(value, int(precision))


_DATETIME = serializers.DateTimeField()


def iso_datetime(value: Any) -> str | None:
    """A datetime as DRF's DateTimeField writes it (the unrolled serializers' fast path)."""
    return _DATETIME.to_representation(value)


class MakerOut(serializers.Serializer):
    username = serializers.CharField()
    trades = serializers.IntegerField()
    completion_rate = serializers.DecimalField(max_digits=5, decimal_places=1, allow_null=True)
    # issue 20: online status and release time
    online = serializers.BooleanField(
        help_text="Seen within MAKER_ONLINE_MINUTES (10) minutes; else see last_seen."
    )
    last_seen = serializers.DateTimeField(
        allow_null=True, help_text="When the maker was last active (to 5 minutes); null: never."
    )
    average_release_seconds = serializers.IntegerField(
        allow_null=True,
        help_text="Mean seconds from paid to the maker's release, over their completed sales "
        "of the last 30 days; null without one.",
    )


def maker_out(name: str, found: TraderStats | None) -> dict[str, Any]:
    """MakerOut's shape of a trader's stats (the book's, an offer's, a profile's)."""
    last_seen = found.last_seen if found else None
    return {
        "username": name,
        "trades": found.trades if found else 0,
        "completion_rate": found.completion_rate if found else None,
        "online": is_online(last_seen),
        "last_seen": None if last_seen is None else iso_datetime(last_seen),
        "average_release_seconds": found.average_release_seconds if found else None,
    }


class OfferOut(serializers.Serializer):
    id = serializers.IntegerField()
    side = serializers.ChoiceField(choices=Offer.Side.choices)
    asset = serializers.CharField(source="asset.code")
    fiat = serializers.CharField(source="fiat.code")
    price_type = serializers.ChoiceField(choices=Offer.PriceType.choices)
    price = AmountOut(precision="fiat.precision", allow_null=True)
    margin_percent = AmountOut(precision=2, allow_null=True)
    effective_price = serializers.SerializerMethodField()
    min_fiat = AmountOut(precision="fiat.precision")
    max_fiat = AmountOut(precision="fiat.precision")
    amount = AmountOut(precision="asset.precision")
    available = AmountOut(
        precision="asset.precision",
        source="depth",
        help_text=gettext_lazy(
            "What can be taken now: what is left, for a sell offer at most what its maker holds."
        ),
    )
    payment_methods = serializers.SerializerMethodField()
    payment_window_minutes = serializers.IntegerField()
    terms = serializers.CharField()
    is_active = serializers.BooleanField()
    closed_at = serializers.DateTimeField(
        allow_null=True,
        help_text=gettext_lazy(
            "When the platform closed the offer because what is left can't cover its "
            "minimum per trade (is_active is then false); null otherwise."
        ),
    )
    maker = serializers.SerializerMethodField()
    min_taker_tier = serializers.IntegerField()
    min_taker_trades = serializers.IntegerField()
    min_account_age_days = serializers.IntegerField()
    trusted_only = serializers.BooleanField()
    allowed_countries = serializers.ListField(
        child=serializers.CharField(),
        help_text="Takers' countries (ISO 3166-1 alpha-2); empty: anywhere.",
    )
    auto_reply = serializers.SerializerMethodField(
        help_text="Posted in the trade chat when a trade opens; shown here to the offer's maker "
        "only (null for others)."
    )
    unmet_requirements = serializers.SerializerMethodField(
        help_text=gettext_lazy(
            "Why the requesting user may not take this offer; empty when it is open to them."
        )
    )
    created_at = serializers.DateTimeField()

    def to_representation(self, offer: Offer) -> dict[str, Any]:
        """The declared fields above, unrolled: the order book renders 50 offers a page, and
        DRF's field-by-field walk (a get_attribute and a to_representation per field and offer)
        cost it more than its queries. The declared fields stay the schema, and
        marketplace/tests/test_offer_out.py holds this to DRF's generic output for every kind of
        offer, so the two cannot drift apart."""
        fiat_places, asset_places = offer.fiat.precision, offer.asset.precision
        margin = offer.margin_percent
        return {
            "id": offer.pk,
            "side": offer.side,
            "asset": offer.asset.code,
            "fiat": offer.fiat.code,
            "price_type": offer.price_type,
            "price": None if offer.price is None else fmt(offer.price, fiat_places),
            "margin_percent": None if margin is None else fmt(margin, 2),
            "effective_price": self.get_effective_price(offer),
            "min_fiat": fmt(offer.min_fiat, fiat_places),
            "max_fiat": fmt(offer.max_fiat, fiat_places),
            "amount": fmt(offer.amount, asset_places),
            "available": fmt(offer.depth, asset_places),
            "payment_methods": self.get_payment_methods(offer),
            "payment_window_minutes": offer.payment_window_minutes,
            "terms": offer.terms,
            "is_active": offer.is_active,
            "closed_at": None if offer.closed_at is None else iso_datetime(offer.closed_at),
            "maker": self.get_maker(offer),
            "min_taker_tier": offer.min_taker_tier,
            "min_taker_trades": offer.min_taker_trades,
            "min_account_age_days": offer.min_account_age_days,
            "trusted_only": offer.trusted_only,
            "allowed_countries": list(offer.allowed_countries),
            "auto_reply": self.get_auto_reply(offer),
            "unmet_requirements": self.get_unmet_requirements(offer),
            "created_at": iso_datetime(offer.created_at),
        }

    def generic_representation(self, offer: Offer) -> dict[str, Any]:
        """DRF's own walk over the declared fields: what to_representation must equal."""
        return dict(super().to_representation(offer))

    @extend_schema_field({"type": "string", "nullable": True, "example": "86275.00"})
    def get_effective_price(self, offer: Offer) -> str | None:
        price = offer.effective_price  # kept by the services
        return None if price is None else fmt(price, offer.fiat.precision)

    def get_payment_methods(self, offer: Offer) -> list[str]:
        codes = self.context.get("payment_method_codes")  # the order book: one query a page
        if codes is not None:
            return codes.get(offer.pk, [])
        return [m.code for m in offer.payment_methods.all()]

    def get_unmet_requirements(self, offer: Offer) -> list[str]:
        unmet: dict[int, list[str]] = self.context.get("unmet", {})
        return unmet.get(offer.pk, [])

    @extend_schema_field(MakerOut)
    def get_maker(self, offer: Offer) -> dict[str, Any]:
        stats: dict[int, TraderStats] = self.context.get("maker_stats", {})
        return maker_out(maker_name(offer), stats.get(offer.maker_id))

    @extend_schema_field({"type": "string", "nullable": True})
    def get_auto_reply(self, offer: Offer) -> str | None:
        request = self.context.get("request")
        user = getattr(request, "user", None)
        return offer.auto_reply if user is not None and user.pk == offer.maker_id else None
