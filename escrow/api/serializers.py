"""Output shapes of trades, shared by every endpoint that returns them."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from escrow.models import EscrowEvent, Trade
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
    terms = serializers.CharField()
    created_at = serializers.DateTimeField()
    my_role = serializers.SerializerMethodField()
    actions = serializers.SerializerMethodField()
    events = EventOut(many=True, read_only=True)

    def _user(self) -> Any:
        request = self.context.get("request")
        return getattr(request, "user", None)

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
