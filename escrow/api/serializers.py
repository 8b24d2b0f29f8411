"""Output shapes of trades, shared by every endpoint that returns them."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from escrow.models import EscrowEvent, Trade, TradePaymentAccount
from escrow.selectors.payment import trade_payment_account_for
from escrow.services import allowed_moves
from marketplace.api.serializers import AmountOut

ACTION_FOR_STATE: dict[str, str] = {
    Trade.State.PAID: "mark-paid",
    Trade.State.RELEASING: "release",
    Trade.State.CANCELLED: "cancel",
    Trade.State.DISPUTED: "dispute",
}


class EventOut(serializers.Serializer[EscrowEvent]):
    old_state = serializers.CharField()
    new_state = serializers.CharField()
    actor = serializers.CharField(source="actor.username", allow_null=True, default=None)
    actor_role = serializers.CharField()
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()


class PaymentFieldOut(serializers.Serializer[dict[str, Any]]):
    key = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field named `label`
    value = serializers.CharField(
        help_text=gettext_lazy("Exactly what to type or paste (the copy button's).")
    )
    display = serializers.CharField(
        help_text=gettext_lazy("How it reads, e.g. an IBAN in groups of four.")
    )


class TradePaymentAccountOut(serializers.Serializer[TradePaymentAccount]):
    """The seller's account as copied when the trade opened."""

    method = serializers.CharField(source="method_code")
    method_name = serializers.CharField()
    holder_verified = serializers.BooleanField(
        help_text=gettext_lazy(
            "The holder's name matched the seller's verified (KYC) name at opening."
        )
    )
    details = PaymentFieldOut(source="fields", many=True)


class TradeOut(serializers.Serializer[Trade]):
    id = serializers.IntegerField()
    offer = serializers.IntegerField(source="offer_id")
    state = serializers.ChoiceField(choices=Trade.State.choices)
    buyer = serializers.CharField(source="buyer.username")
    seller = serializers.CharField(source="seller.username")
    asset = serializers.CharField(source="asset.code")
    fiat = serializers.CharField(source="fiat.code")
    amount = AmountOut(precision="asset.precision")
    fiat_amount = AmountOut(precision="fiat.precision")
    price = AmountOut(precision="fiat.precision")
    fee = AmountOut(precision="asset.precision")
    seller_fee = AmountOut(precision="asset.precision")
    buyer_fee = AmountOut(precision="asset.precision")
    buyer_receives = AmountOut(precision="asset.precision")
    payment_method = serializers.CharField(
        source="payment_method.code", allow_null=True, default=None
    )
    payment_window_minutes = serializers.IntegerField()
    payment_deadline = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)
    cancel_reason = serializers.CharField(
        help_text="Why the buyer cancelled (changed_mind, cannot_pay, seller_asked, "
        "seller_details, seller_unresponsive, other); empty otherwise."
    )
    terms = serializers.CharField()
    created_at = serializers.DateTimeField()
    my_role = serializers.SerializerMethodField()
    payment_account = serializers.SerializerMethodField()
    actions = serializers.SerializerMethodField()
    events = EventOut(many=True, read_only=True)

    def _user(self) -> Any:
        request = self.context.get("request")
        return getattr(request, "user", None)

    @extend_schema_field(TradePaymentAccountOut(allow_null=True))
    def get_payment_account(self, trade: Trade) -> dict[str, Any] | None:
        """The account the buyer pays into: for the buyer (and the seller, whose it is) while
        the trade is open, and for the moderator assigned to its dispute; null for others."""
        account = trade_payment_account_for(trade=trade, user=self._user())
        return dict(TradePaymentAccountOut(account).data) if account is not None else None

    def get_my_role(self, trade: Trade) -> str | None:
        return trade.role_of(self._user())

    def get_actions(self, trade: Trade) -> list[str]:
        """What the requesting user may POST to /trades/{id}/{action}/ right now."""
        role = trade.role_of(self._user())
        if role is None:
            return []
        return [
            ACTION_FOR_STATE[s]
            for s in allowed_moves(trade=trade, role=role)
            if s in ACTION_FOR_STATE
        ]
