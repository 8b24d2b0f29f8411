from __future__ import annotations

from django.utils.translation import gettext, gettext_lazy
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ERRORS, ApiView, CursorPage, paginated
from common.idempotency import idempotent
from common.permissions import AccountCredentialForWrites, HasScope
from notifications import selectors, services, webhooks
from notifications.models import Notification, WebhookDelivery

CURSOR_PARAMS = [OpenApiParameter("cursor", str), OpenApiParameter("limit", int)]
EVENT_CHOICES = [(e, e) for e in services.WEBHOOK_EVENTS]


class WebhookOut(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.URLField()
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_CHOICES),
        help_text=gettext_lazy("Empty: every event."),
    )
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class WebhookCreatedOut(WebhookOut):
    secret = serializers.CharField(
        allow_null=True,
        help_text=gettext_lazy(
            "Shown once; store it now. X-Signature is sha256=HMAC-SHA256(secret, "
            '"<X-Timestamp>.<raw body>") in hex. null in an Idempotency-Key replay, which has '
            "secret_shown_once: true instead."
        ),
    )
    secret_shown_once = serializers.BooleanField(
        required=False,
        help_text=gettext_lazy("Only in an Idempotency-Key replay: the secret is not repeated."),
    )


class DeliveryOut(serializers.Serializer):
    id = serializers.IntegerField()
    event = serializers.CharField(help_text=gettext_lazy("trade.created, trade.paid, ..."))
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices)
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.ChoiceField(
        choices=WebhookDelivery.Error.choices,
        allow_blank=True,
        help_text=gettext_lazy(
            "Why the last attempt failed, as a class (empty once delivered); for "
            "http_status and redirect the code is in last_status_code. The answer's body is never "
            "read."
        ),
    )
    next_attempt_at = serializers.DateTimeField(
        allow_null=True, help_text=gettext_lazy("When a pending delivery is tried again.")
    )
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


class NotificationOut(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Notification.Kind.choices)
    trade = serializers.IntegerField(source="trade_id", allow_null=True)
    text = serializers.CharField()
    created_at = serializers.DateTimeField()
    read_at = serializers.DateTimeField(allow_null=True)


class WebhookListApi(ApiView):
    """Your webhook endpoints: trade events POSTed as signed JSON."""

    permission_classes = [HasScope, AccountCredentialForWrites]

    class Input(serializers.Serializer):
        class Meta:
            ref_name = "WebhookCreateInput"

        url = serializers.CharField(
            max_length=webhooks.URL_MAX_LENGTH,
            help_text=gettext_lazy(
                "https://, on a host whose every address is public (no private, loopback "
                "or link-local addresses)"
            ),
        )
        events = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_CHOICES),
            required=False,
            default=list,
            help_text=gettext_lazy("Events to send; empty or left out: all of them."),
        )

    @extend_schema(
        operation_id="webhooks_list",
        parameters=CURSOR_PARAMS,
        responses={200: paginated(WebhookOut), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        return self.paginate(selectors.webhook_list_for_user(user=request.user), WebhookOut)

    @extend_schema(
        operation_id="webhooks_create",
        request=Input,
        responses={201: WebhookCreatedOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Paid and disputed trades only",
                value={
                    "url": "https://bot.example.com/hooks/p2p",
                    "events": ["trade.paid", "trade.disputed"],
                },
                request_only=True,
            ),
            OpenApiExample(
                "Created",
                value={
                    "id": 7,
                    "url": "https://bot.example.com/hooks/p2p",
                    "events": ["trade.paid", "trade.disputed"],
                    "is_active": True,
                    "created_at": "2025-01-31T12:00:00Z",
                    "secret": "whsec_3f1c0e5a9b7d4c2e8f6a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e",
                },
                response_only=True,
                status_codes=["201"],
            ),
            OpenApiExample(
                "Not an http(s) URL",
                value={
                    "error": {
                        "code": "invalid",
                        "message": "url: Enter an http:// or https:// URL.",
                        "fields": {"url": ["Enter an http:// or https:// URL."]},
                    }
                },
                response_only=True,
                status_codes=["400"],
            ),
            OpenApiExample(
                "A private or internal address",
                value={
                    "error": {
                        "code": "invalid",
                        "message": "url: webhooks cannot be sent to private or internal "
                        "addresses (10.0.0.1).",
                        "fields": {
                            "url": [
                                "webhooks cannot be sent to private or internal addresses "
                                "(10.0.0.1)."
                            ]
                        },
                    }
                },
                response_only=True,
                status_codes=["400"],
            ),
        ],
        description=(
            "Register an endpoint. Each event is POSTed as JSON `{event, delivery_id, created_at, "
            "trade: {id, state, asset, fiat, amount, fiat_amount, buyer, seller}}` with headers "
            "`X-Event`, `X-Delivery-Id`, `X-Timestamp` (unix seconds) and `X-Signature: "
            "sha256=<hex HMAC-SHA256(secret, timestamp + '.' + raw body)>`. Answer 2xx within 5 "
            "seconds; anything else (a redirect too: it is not followed) is retried with "
            "exponential backoff. Delivery is at least once: de-duplicate on X-Delivery-Id. The "
            "URL must be https:// and its host must resolve to public addresses only; it is "
            "resolved again at each delivery."
        ),
    )
    @idempotent(secret_fields=("secret",))
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_create(user=request.user, **data.validated_data)
        out = WebhookCreatedOut({**WebhookOut(endpoint).data, "secret": secret}).data
        return Response(out, status=status.HTTP_201_CREATED)


class WebhookDetailApi(ApiView):
    """One of your webhook endpoints."""

    permission_classes = [HasScope, AccountCredentialForWrites]

    @extend_schema(
        operation_id="webhooks_destroy",
        responses={204: OpenApiResponse(description="Deleted with its delivery log."), **ERRORS},
    )
    def delete(self, request: Request, endpoint_id: int) -> Response:
        services.webhook_delete(endpoint_id=endpoint_id, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListApi(ApiView):
    """The delivery log of one of your endpoints, newest first."""

    @extend_schema(
        operation_id="webhooks_deliveries_list",
        parameters=CURSOR_PARAMS,
        responses={200: paginated(DeliveryOut), **ERRORS},
        examples=[
            OpenApiExample(
                "Retried once",
                value={
                    "next": None,
                    "previous": None,
                    "results": [
                        {
                            "id": 42,
                            "event": "trade.paid",
                            "status": "delivered",
                            "attempts": 2,
                            "last_status_code": 200,
                            "last_error": "",
                            "next_attempt_at": None,
                            "created_at": "2025-01-31T12:00:00Z",
                            "delivered_at": "2025-01-31T12:00:02Z",
                        }
                    ],
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def get(self, request: Request, endpoint_id: int) -> Response:
        qs = selectors.delivery_list_for_endpoint(endpoint_id=endpoint_id, user=request.user)
        return self.paginate(qs, DeliveryOut)


class NotificationListApi(ApiView):
    """Your in-app notifications, newest first, with the number still unread."""

    @extend_schema(
        operation_id="notifications_list",
        parameters=[
            OpenApiParameter("unread", bool, description="Only the ones not read yet."),
            *CURSOR_PARAMS,
        ],
        responses={
            200: inline_serializer(
                "NotificationPage",
                {
                    "results": NotificationOut(many=True),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "unread": serializers.IntegerField(
                        help_text=gettext("How many are not read yet.")
                    ),
                },
            ),
            **ERRORS,
        },
        examples=[
            OpenApiExample(
                "One unread",
                value={
                    "next": None,
                    "previous": None,
                    "unread": 1,
                    "results": [
                        {
                            "id": 3,
                            "kind": "paid",
                            "trade": 12,
                            "text": "bob marked trade #12 paid: check that 800.00 EUR arrived, "
                            "then release the BTC.",
                            "created_at": "2025-01-31T12:00:00Z",
                            "read_at": None,
                        }
                    ],
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def get(self, request: Request) -> Response:
        unread_only = request.query_params.get("unread", "").lower() in ("1", "true", "yes")
        qs = selectors.notification_list_for_user(user=request.user, unread_only=unread_only)
        page = CursorPage()
        rows = page.paginate_queryset(qs, request, view=self)
        response = page.get_paginated_response(NotificationOut(rows, many=True).data)
        response.data["unread"] = selectors.notification_unread_count(user=request.user)
        return response


class NotificationReadApi(ApiView):
    """Mark one of your notifications read."""

    @extend_schema(
        operation_id="notifications_read",
        request=None,
        responses={200: NotificationOut, **ERRORS},
        description="Idempotent: reading it again keeps the first read_at.",
    )
    @idempotent
    def post(self, request: Request, notification_id: int) -> Response:
        notification = services.notification_mark_read(
            notification_id=notification_id, user=request.user
        )
        return Response(NotificationOut(notification).data)
