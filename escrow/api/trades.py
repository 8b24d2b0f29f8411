"""Opening trades over the API (take an offer, quick match), reading them, and the trade room's
chat and feedback."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Prefetch
from django.http import FileResponse
from django.utils.translation import gettext, gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.selectors import profile_for
from common.api import ERRORS, AmountInput, ApiView, paginated
from common.db import replica_reads
from common.errors import NotFound, ValidationFailed
from common.files import private_file_response
from common.idempotency import idempotent
from escrow import selectors as escrow_selectors
from escrow import services as escrow_services
from escrow.api.serializers import TradeOut
from escrow.models import EscrowEvent, Feedback, Trade, TradeMessage


def trade_answer(request: Request, trade: Trade | int, status: int = 200) -> Response:
    """A trade as TradeOut shows it to the requesting user. A trade a service has just returned
    with what it shows loaded (escrow.services.SHOWN_RELATED: a move's, a take's) is shown as
    it is, its events read in one query; otherwise it is read by id, with all it shows."""
    if isinstance(trade, Trade) and escrow_services.trade_has_related(
        trade, escrow_selectors.ANSWER_RELATED
    ):
        escrow_selectors.trade_events_load(trade)
    else:
        trade = escrow_selectors.trade_for_answer(
            trade_id=trade if isinstance(trade, int) else trade.pk
        )
    return Response(TradeOut(trade, context={"request": request}).data, status=status)


class OfferTakeApi(ApiView):
    class Input(serializers.Serializer[dict[str, Any]]):
        class Meta:
            ref_name = "OfferTakeInput"

        amount = AmountInput(required=False, help_text=gettext_lazy("In the asset."))
        fiat_amount = AmountInput(required=False, help_text=gettext_lazy("In the offer's fiat."))
        payment_method = serializers.CharField(required=False, max_length=32)
        payment_account = serializers.IntegerField(
            required=False,
            help_text=gettext_lazy(
                "Taking a buy offer (you sell): the id of your saved account for the "
                "payment method, which the buyer pays into. A sell offer's is the one its maker named."
            ),
        )

    @extend_schema(
        operation_id="offers_take",
        request=Input,
        responses={201: TradeOut, **ERRORS},
        examples=[
            OpenApiExample(
                "By fiat amount",
                value={"fiat_amount": "250.00", "payment_method": "sepa"},
                request_only=True,
            )
        ],
        description="Open a trade: the seller's amount is held in escrow at once. 409 when the offer ran out or is paused.",
    )
    @idempotent
    def post(self, request: Request, offer_id: int) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        trade = escrow_services.trade_open(
            offer_id=offer_id, taker=request.user, **data.validated_data
        )
        return trade_answer(request, trade, status=status.HTTP_201_CREATED)


class MatchApi(ApiView):
    class Input(serializers.Serializer[dict[str, Any]]):
        class Meta:
            ref_name = "MatchInput"

        side = serializers.ChoiceField(
            choices=["buy", "sell"], help_text=gettext_lazy("What you want to do with the asset.")
        )
        asset = serializers.CharField(max_length=12)
        fiat = serializers.CharField(max_length=3)
        fiat_amount = AmountInput()
        payment_method = serializers.CharField(required=False, max_length=32)

    @extend_schema(
        operation_id="match",
        request=Input,
        responses={201: TradeOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Quick buy",
                value={"side": "buy", "asset": "BTC", "fiat": "EUR", "fiat_amount": "100"},
                request_only=True,
            )
        ],
        description="Quick buy/sell: takes the best offer that fits the amount at once.",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        trade = escrow_services.trade_match(taker=request.user, **data.validated_data)
        return trade_answer(request, trade, status=status.HTTP_201_CREATED)


class TradeListApi(ApiView):
    ordering = ("-created_at", "-id")

    @extend_schema(
        operation_id="trades_list",
        parameters=[
            OpenApiParameter("state", str, enum=Trade.State.values),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
        ],
        responses={200: paginated(TradeOut), **ERRORS},
    )
    @replica_reads
    def get(self, request: Request) -> Response:
        state = request.query_params.get("state") or None
        if state and state not in Trade.State.values:
            raise ValidationFailed(
                gettext("state: unknown state {state!r}.").format(state=state),
                fields={"state": [gettext("Unknown state.")]},
            )
        qs = escrow_selectors.trade_list_for_user(user=request.user, state=state)
        qs = qs.select_related("payment_account").prefetch_related(
            Prefetch("events", queryset=EscrowEvent.objects.select_related("actor"))
        )
        return self.paginate(qs, TradeOut)


class TradeDetailApi(ApiView):
    @extend_schema(operation_id="trades_retrieve", responses={200: TradeOut, **ERRORS})
    def get(self, request: Request, trade_id: int) -> Response:
        trade = escrow_selectors.trade_for_answer(trade_id=trade_id, user=request.user)
        return Response(TradeOut(trade, context={"request": request}).data)


class MessageOut(serializers.Serializer[TradeMessage]):
    id = serializers.IntegerField()
    sender = serializers.CharField(source="sender.username", allow_null=True, default=None)
    is_moderator = serializers.BooleanField()
    is_auto_reply = serializers.BooleanField(
        help_text="The offer's auto-reply, posted for its maker when the trade opened."
    )
    text = serializers.CharField()
    attachment_url = serializers.SerializerMethodField()
    attachment_type = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_attachment_url(self, message: Any) -> str | None:
        if not message.attachment:
            return None
        return f"/api/v1/trades/{message.trade_id}/messages/{message.pk}/attachment/"


class TradeMessagesApi(ApiView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class Input(serializers.Serializer[dict[str, Any]]):
        class Meta:
            ref_name = "MessageInput"

        text = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
        attachment = serializers.FileField(
            required=False, help_text=gettext_lazy("PNG, JPEG, GIF, WebP or PDF")
        )

    @extend_schema(
        operation_id="trades_messages_list", responses={200: paginated(MessageOut), **ERRORS}
    )
    def get(self, request: Request, trade_id: int) -> Response:
        trade = escrow_selectors.trade_get_for_user(trade_id=trade_id, user=request.user)
        self.ordering = ("created_at", "id")
        return self.paginate(escrow_selectors.trade_messages(trade=trade), MessageOut)

    @extend_schema(
        operation_id="trades_messages_create",
        request={"application/json": Input, "multipart/form-data": Input},
        responses={201: MessageOut, **ERRORS},
        examples=[
            OpenApiExample("Text", value={"text": "Sent via SEPA, ref 1234"}, request_only=True)
        ],
    )
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        message = escrow_services.trade_message_send(
            trade_id=trade_id,
            actor=request.user,
            text=data.validated_data["text"],
            attachment=data.validated_data.get("attachment"),
        )
        return Response(MessageOut(message).data, status=status.HTTP_201_CREATED)


class TradeMessageAttachmentApi(ApiView):
    @extend_schema(
        operation_id="trades_messages_attachment",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **ERRORS},
    )
    def get(self, request: Request, trade_id: int, message_id: int) -> FileResponse:
        message = escrow_selectors.trade_message_attachment(
            trade_id=trade_id, message_id=message_id, user=request.user
        )
        return private_file_response(
            message.attachment, content_type=message.attachment_type, name=message.attachment_name
        )


class FeedbackOut(serializers.Serializer[Feedback]):
    id = serializers.IntegerField()
    trade = serializers.IntegerField(source="trade_id")
    author = serializers.CharField(source="author.username")
    target = serializers.CharField(source="target.username")
    rating = serializers.ChoiceField(choices=Feedback.Rating.choices)
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()
    reply = serializers.CharField(
        help_text=gettext_lazy("The target's one reply; empty until they reply.")
    )
    replied_at = serializers.DateTimeField(allow_null=True)


class TradeFeedbackApi(ApiView):
    class Input(serializers.Serializer[dict[str, Any]]):
        class Meta:
            ref_name = "FeedbackInput"

        rating = serializers.ChoiceField(choices=Feedback.Rating.choices)
        comment = serializers.CharField(
            max_length=500, required=False, allow_blank=True, default=""
        )

    @extend_schema(
        operation_id="trades_feedback",
        request=Input,
        responses={201: FeedbackOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Thanks", value={"rating": "positive", "comment": "Fast release"}, request_only=True
            )
        ],
        description=(
            "Rate the other party of a completed or resolved (refunded, split) trade, once; "
            "never a cancelled or expired one."
        ),
    )
    @idempotent
    def post(self, request: Request, trade_id: int) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = escrow_services.feedback_leave(
            trade_id=trade_id, actor=request.user, **data.validated_data
        )
        return Response(FeedbackOut(feedback).data, status=status.HTTP_201_CREATED)


class FeedbackReplyApi(ApiView):
    class Input(serializers.Serializer[dict[str, Any]]):
        class Meta:
            ref_name = "FeedbackReplyInput"

        text = serializers.CharField(max_length=500)

    @extend_schema(
        operation_id="feedback_reply",
        request=Input,
        responses={200: FeedbackOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Reply",
                value={"text": "The bank held the transfer for a day; sorry for the wait."},
                request_only=True,
            ),
            OpenApiExample(
                "Already replied",
                value={
                    "error": {
                        "code": "reply_exists",
                        "message": "You already replied to this feedback.",
                        "fields": {},
                    }
                },
                response_only=True,
                status_codes=["409"],
            ),
        ],
        description=(
            "Answer feedback left about you, once (403 for anyone but its target, 409 when "
            "already answered). Shown on your public profile."
        ),
    )
    @idempotent
    def post(self, request: Request, feedback_id: int) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = escrow_services.feedback_reply(
            feedback_id=feedback_id, actor=request.user, text=data.validated_data["text"]
        )
        return Response(FeedbackOut(feedback).data)


# --- a trader's public profile (issue 20: online status and release time) ---------------------


class TraderProfileOut(serializers.Serializer[dict[str, Any]]):
    username = serializers.CharField()
    kyc_tier = serializers.IntegerField(help_text="Identity verification level, 0-2.")
    member_since = serializers.DateTimeField()
    trades = serializers.IntegerField(help_text="Completed trades.")
    completion_rate = serializers.DecimalField(max_digits=5, decimal_places=1, allow_null=True)
    online = serializers.BooleanField(
        help_text="Seen within MAKER_ONLINE_MINUTES (10) minutes; else see last_seen."
    )
    last_seen = serializers.DateTimeField(allow_null=True)
    average_release_seconds = serializers.IntegerField(
        allow_null=True,
        help_text="Mean seconds from paid to their release, over their completed sales of the "
        "last 30 days; null without one.",
    )
    positive_feedback = serializers.IntegerField()
    negative_feedback = serializers.IntegerField()


class TraderProfileApi(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="traders_retrieve",
        responses={200: TraderProfileOut, **ERRORS},
        description="A trader's public record, as their profile page shows it: counted from "
        "their trades (fresh), with their online status.",
    )
    def get(self, request: Request, username: str) -> Response:
        trader = get_user_model().objects.filter(username=username, is_active=True).first()
        if trader is None:
            raise NotFound(f"Trader {username[:150]!r} not found.")
        stats = escrow_selectors.trader_stats(user=trader)
        summary = escrow_selectors.feedback_summary(user=trader)
        return Response(
            TraderProfileOut(
                {
                    "username": trader.username,
                    "kyc_tier": profile_for(trader).kyc_tier,
                    "member_since": trader.date_joined,
                    "trades": stats.trades,
                    "completion_rate": stats.completion_rate,
                    "online": stats.is_online(),
                    "last_seen": stats.last_seen,
                    "average_release_seconds": stats.average_release_seconds,
                    "positive_feedback": summary["positive"],
                    "negative_feedback": summary["negative"],
                }
            ).data
        )
