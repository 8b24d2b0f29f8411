from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.services import funds_confirm
from common.api import ERRORS, ApiView, FundsConfirmInput, otp_from
from common.idempotency import idempotent
from escrow import services
from escrow.api.serializers import TradeOut
from escrow.api.trades import trade_answer
from escrow.models import CancelReason
from escrow.selectors import trade_ensure_readable


class ReasonInput(serializers.Serializer[dict[str, Any]]):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class CancelInput(ReasonInput):
    cancel_reason = serializers.ChoiceField(
        choices=CancelReason.choices,
        required=False,
        default=CancelReason.OTHER,
        help_text="Why you cancel. seller_asked, seller_details and seller_unresponsive (the "
        "seller's fault) don't count against your daily cancellation limit "
        "(CANCEL_LIMIT_PER_DAY, default 3: at the limit buying pauses until 00:00 in your time "
        "zone); moderators review them.",
    )


class ReleaseInput(FundsConfirmInput, ReasonInput):
    """The seller's fund password: the 2FA code once 2FA is on, else the account password."""


def _reason(request: Request, trade_id: int) -> str:
    """The body's reason. Strangers get 404 whatever they send: a bad body is refused only
    after the trade is known readable; a good one goes to the move, which refuses strangers
    with the same 404 (one query fewer for every good move)."""
    data = ReasonInput(data=request.data)
    if not data.is_valid():
        trade_ensure_readable(trade_id=trade_id, user=request.user)
        data.is_valid(raise_exception=True)
    return cast(str, data.validated_data["reason"])


_View = TypeVar("_View", bound=Callable[..., Any])


def _schema(
    operation_id: str, description: str, request: type[serializers.Serializer[Any]] = ReasonInput
) -> Callable[[_View], _View]:
    return extend_schema(
        operation_id=operation_id,
        request=request,
        responses={200: TradeOut, **ERRORS},
        description=description + " 409 when the trade is no longer in a state that allows it.",
        examples=[
            OpenApiExample("With the account password", value={"password": "…"}, request_only=True),
            OpenApiExample("With the 2FA code", value={"otp": "123456"}, request_only=True),
        ]
        if request is ReleaseInput
        else [OpenApiExample("No body needed", value={}, request_only=True)],
    )


class TradeMarkPaidApi(ApiView):
    @_schema("trades_mark_paid", "Buyer: the fiat was sent; only while the payment window is open.")
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        _reason(request, trade_id)
        trade = services.trade_mark_paid(trade_id=trade_id, actor=request.user)
        return trade_answer(request, trade)


class TradeReleaseApi(ApiView):
    @_schema(
        "trades_release",
        "Seller: the fiat arrived; the escrow is released to the buyer. Confirm with `otp` (the "
        "2FA code) once 2FA is on, else with `password` (the account password); a missing or "
        "wrong one is refused (403, `otp_required`, `otp_invalid`, `password_required`, "
        "`password_invalid`; 429 `funds_locked` after too many wrong ones) and nothing changes.",
        request=ReleaseInput,
    )
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        trade_ensure_readable(trade_id=trade_id, user=request.user)  # strangers get 404
        data = ReleaseInput(data=request.data)
        data.is_valid(raise_exception=True)
        funds_confirm(
            user=request.user,
            otp=otp_from(request),
            password=data.validated_data.get("password"),
        )
        trade = services.escrow_release(trade_id=trade_id, actor=request.user)
        return trade_answer(request, trade)


class TradeCancelApi(ApiView):
    @_schema(
        "trades_cancel",
        "Buyer, before paying: the hold goes back to the seller. Give `cancel_reason`: the "
        "seller-fault reasons don't count against the daily cancellation limit.",
        request=CancelInput,
    )
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        trade_ensure_readable(trade_id=trade_id, user=request.user)  # strangers get 404
        data = CancelInput(data=request.data)
        data.is_valid(raise_exception=True)
        trade = services.trade_cancel(
            trade_id=trade_id,
            actor=request.user,
            cancel_reason=data.validated_data["cancel_reason"],
            reason=data.validated_data["reason"],
        )
        return trade_answer(request, trade)
