"""Output shapes of trades, shared by every endpoint that returns them."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.money import fmt
from escrow.models import EscrowEvent, Trade, TradePaymentAccount
from escrow.selectors.payment import trade_payment_account_for
from escrow.services import allowed_moves
from marketplace.api.serializers import AmountOut, iso_datetime

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

    def to_representation(self, event: EscrowEvent) -> dict[str, Any]:
        """The declared fields above, unrolled (see TradeOut.to_representation)."""
        return event_out(event)

    def generic_representation(self, event: EscrowEvent) -> dict[str, Any]:
        """DRF's own walk over the declared fields: what to_representation must equal."""
        return dict(super().to_representation(event))


def event_out(event: EscrowEvent) -> dict[str, Any]:
    actor = event.actor
    return {
        "old_state": event.old_state,
        "new_state": event.new_state,
        "actor": None if actor is None else actor.username,
        "actor_role": event.actor_role,
        "reason": event.reason,
        "created_at": iso_datetime(event.created_at),
    }


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

    def to_representation(self, trade: Trade) -> dict[str, Any]:
        """The declared fields above, unrolled: every trading request answers with its trade,
        and DRF's walk (a deep copy of 25 fields and their nested serializers on each answer,
        then a get_attribute and a to_representation per field) cost more than the statements
        it answers for. The declared fields stay the schema, and escrow/tests/test_trade_out.py
        holds this to DRF's generic output for every state and viewer, so the two cannot
        drift apart."""
        user = self._user()
        asset_places, fiat_places = trade.asset.precision, trade.fiat.precision
        method = trade.payment_method
        paid_at = trade.paid_at
        return {
            "id": trade.pk,
            "offer": trade.offer_id,
            "state": trade.state,
            "buyer": trade.buyer.username,
            "seller": trade.seller.username,
            "asset": trade.asset.code,
            "fiat": trade.fiat.code,
            "amount": fmt(trade.amount, asset_places),
            "fiat_amount": fmt(trade.fiat_amount, fiat_places),
            "price": fmt(trade.price, fiat_places),
            "fee": fmt(trade.fee, asset_places),
            "seller_fee": fmt(trade.seller_fee, asset_places),
            "buyer_fee": fmt(trade.buyer_fee, asset_places),
            "buyer_receives": fmt(trade.buyer_receives, asset_places),
            "payment_method": None if method is None else method.code,
            "payment_window_minutes": trade.payment_window_minutes,
            "payment_deadline": iso_datetime(trade.payment_deadline),
            "paid_at": None if paid_at is None else iso_datetime(paid_at),
            "cancel_reason": trade.cancel_reason,
            "terms": trade.terms,
            "created_at": iso_datetime(trade.created_at),
            "my_role": trade.role_of(user),
            "payment_account": self._payment_account(trade, user),
            "actions": self._actions(trade, user),
            "events": [event_out(e) for e in trade.events.all()],
        }

    def generic_representation(self, trade: Trade) -> dict[str, Any]:
        """DRF's own walk over the declared fields: what to_representation must equal."""
        return dict(super().to_representation(trade))

    def _user(self) -> Any:
        request = self.context.get("request")
        return getattr(request, "user", None)

    def _payment_account(self, trade: Trade, user: Any) -> dict[str, Any] | None:
        account = trade_payment_account_for(trade=trade, user=user)
        if account is None:
            return None
        return {
            "method": account.method_code,
            "method_name": account.method_name,
            "holder_verified": bool(account.holder_verified),
            "details": [
                {
                    "key": str(f["key"]),
                    "label": str(f["label"]),
                    "value": str(f["value"]),
                    "display": str(f["display"]),
                }
                for f in account.fields
            ],
        }

    def _actions(self, trade: Trade, user: Any) -> list[str]:
        role = trade.role_of(user)
        if role is None:
            return []
        return [
            ACTION_FOR_STATE[s]
            for s in allowed_moves(trade=trade, role=role)
            if s in ACTION_FOR_STATE
        ]

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
        return self._actions(trade, self._user())
