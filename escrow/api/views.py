from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ApiView, ErrorSerializer, otp_from
from common.idempotency import idempotent
from disputes.models import Dispute
from disputes.services import dispute_open
from escrow import services
from escrow.models import EscrowEvent
from marketplace.api.serializers import TradeOut
from escrow.models import Trade
from escrow.selectors import trade_get_for_user

ERRORS = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
    409: ErrorSerializer,
    429: ErrorSerializer,
}


class ReasonInput(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    otp = serializers.CharField(
        max_length=10,
        required=False,
        help_text="2FA code (release, once 2FA is on); or X-OTP header.",
    )


def _trade_response(request: Request, trade_id: int) -> Response:
    trade = (
        Trade.objects.select_related("asset", "fiat", "buyer", "seller", "payment_method")
        .prefetch_related(Prefetch("events", queryset=EscrowEvent.objects.select_related("actor")))
        .get(pk=trade_id)
    )
    return Response(TradeOut(trade, context={"request": request}).data)


def _reason(request: Request, trade_id: int) -> str:
    trade_get_for_user(trade_id=trade_id, user=request.user)  # strangers get 404
    data = ReasonInput(data=request.data)
    data.is_valid(raise_exception=True)
    return data.validated_data["reason"]


def _schema(operation_id: str, description: str):
    return extend_schema(
        operation_id=operation_id,
        request=ReasonInput,
        responses={200: TradeOut, **ERRORS},
        description=description + " 409 when the trade is no longer in a state that allows it.",
        examples=[OpenApiExample("No body needed", value={}, request_only=True)],
    )


class TradeMarkPaidApi(ApiView):
    @_schema("trades_mark_paid", "Buyer: the fiat was sent; only while the payment window is open.")
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        _reason(request, trade_id)
        services.trade_mark_paid(trade_id=trade_id, actor=request.user)
        return _trade_response(request, trade_id)


class TradeReleaseApi(ApiView):
    @_schema("trades_release", "Seller: the fiat arrived; the escrow is released to the buyer.")
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        _reason(request, trade_id)
        services.escrow_release(trade_id=trade_id, actor=request.user, otp=otp_from(request))
        return _trade_response(request, trade_id)


class TradeCancelApi(ApiView):
    @_schema("trades_cancel", "Buyer, before paying: the hold goes back to the seller.")
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        reason = _reason(request, trade_id)
        services.trade_cancel(trade_id=trade_id, actor=request.user, reason=reason)
        return _trade_response(request, trade_id)


class DisputeInput(serializers.Serializer):
    category = serializers.ChoiceField(
        choices=Dispute.Category.choices, default=Dispute.Category.OTHER
    )
    reason = serializers.CharField(max_length=4000, help_text="What happened, for the moderator.")


class TradeDisputeApi(ApiView):
    @extend_schema(
        operation_id="trades_dispute",
        request=DisputeInput,
        responses={200: TradeOut, **ERRORS},
        description=(
            "Either party from paid after the dispute delay, or the buyer from funded (paid but "
            "could not mark it): a moderator decides. 409 when the trade's state doesn't allow it."
        ),
        examples=[
            OpenApiExample(
                "Not released",
                value={
                    "category": "paid_not_released",
                    "reason": "Paid at 14:05 by SEPA, ref 1234.",
                },
                request_only=True,
            )
        ],
    )
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        trade_get_for_user(trade_id=trade_id, user=request.user)  # strangers get 404
        data = DisputeInput(data=request.data)
        data.is_valid(raise_exception=True)
        dispute_open(
            trade_id=trade_id,
            actor=request.user,
            category=data.validated_data["category"],
            text=data.validated_data["reason"],
        )
        return _trade_response(request, trade_id)
