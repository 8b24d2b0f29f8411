"""Opening a dispute over the API (a trade's party); moderators decide in the admin."""

from __future__ import annotations

from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ERRORS, ApiView
from common.idempotency import idempotent
from disputes.models import Dispute
from disputes.services import dispute_open
from escrow.api.serializers import TradeOut
from escrow.api.trades import trade_answer
from escrow.selectors import trade_ensure_readable


class DisputeInput(serializers.Serializer):
    category = serializers.ChoiceField(
        choices=Dispute.Category.choices, default=Dispute.Category.OTHER
    )
    reason = serializers.CharField(
        max_length=4000, help_text=gettext_lazy("What happened, for the moderator.")
    )


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
        trade_ensure_readable(trade_id=trade_id, user=request.user)  # strangers get 404
        data = DisputeInput(data=request.data)
        data.is_valid(raise_exception=True)
        dispute_open(
            trade_id=trade_id,
            actor=request.user,
            category=data.validated_data["category"],
            text=data.validated_data["reason"],
        )
        return trade_answer(request, trade_id)
