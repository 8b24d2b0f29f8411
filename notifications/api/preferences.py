"""GET/PUT /api/v1/notifications/preferences/: which news reaches you by email and Telegram."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ERRORS, ApiView
from common.permissions import AccountCredentialForWrites, HasScope
from notifications import preferences, telegram
from notifications.models import NotificationPreference

CATEGORY_HELP = "; ".join(
    f"{value}: {label}" for value, label in NotificationPreference.Category.choices
)


class PreferenceOut(serializers.Serializer):
    category = serializers.ChoiceField(choices=NotificationPreference.Category.choices)
    # (DRF takes declared fields off the class; mypy sees Field.label)
    label = serializers.CharField()  # type: ignore[assignment]
    email = serializers.BooleanField()
    telegram = serializers.BooleanField(
        help_text=gettext_lazy("Sent only while a Telegram chat is linked.")
    )


class TelegramOut(serializers.Serializer):
    enabled = serializers.BooleanField(
        help_text=gettext_lazy("Whether this site has a Telegram bot.")
    )
    bot_name = serializers.CharField(
        help_text=gettext_lazy("The bot to send `/start CODE` to (without @).")
    )
    linked = serializers.BooleanField()


class PreferencesOut(serializers.Serializer):
    preferences = PreferenceOut(many=True)
    telegram = TelegramOut()


class PreferenceChange(serializers.Serializer):
    category = serializers.ChoiceField(
        choices=NotificationPreference.Category.choices, help_text=CATEGORY_HELP
    )
    email = serializers.BooleanField(required=False, help_text=gettext_lazy("Left out: unchanged."))
    telegram = serializers.BooleanField(
        required=False, help_text=gettext_lazy("Left out: unchanged.")
    )


class PreferencesWriteDenied(AccountCredentialForWrites):
    message = (
        "API keys can't change notification settings (a leaked key could silence your alerts); "
        "use your account token or the settings page."
    )


def _out(user: Any) -> dict[str, Any]:
    return {
        "preferences": preferences.preferences_for_user(user=user),
        "telegram": {
            "enabled": telegram.telegram_enabled(),
            "bot_name": settings.TELEGRAM_BOT_NAME,
            "linked": telegram.telegram_chat_of(user=user) is not None,
        },
    }


EXAMPLE = {
    "preferences": [
        {
            "category": "trade_paid",
            "label": "The buyer marked a trade paid",
            "email": True,
            "telegram": True,
        },
        {
            "category": "chat",
            "label": "Chat messages in your trades",
            "email": False,
            "telegram": False,
        },
    ],
    "telegram": {"enabled": True, "bot_name": "P2PEscrowBot", "linked": True},
}


class NotificationPreferencesApi(ApiView):
    """Which news reaches you outside the site. In-app notifications always happen."""

    permission_classes = [HasScope, PreferencesWriteDenied]

    class Input(serializers.Serializer):
        class Meta:
            ref_name = "NotificationPreferencesInput"

        preferences = PreferenceChange(many=True)

    @extend_schema(
        operation_id="notification_preferences_get",
        responses={200: PreferencesOut, **ERRORS},
        examples=[OpenApiExample("Defaults, Telegram linked", value=EXAMPLE, response_only=True)],
    )
    def get(self, request: Request) -> Response:
        return Response(PreferencesOut(_out(request.user)).data)

    @extend_schema(
        operation_id="notification_preferences_set",
        request=Input,
        responses={200: PreferencesOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Chat by Telegram, no email about paid trades",
                value={
                    "preferences": [
                        {"category": "chat", "telegram": True},
                        {"category": "trade_paid", "email": False},
                    ]
                },
                request_only=True,
            )
        ],
        description=(
            "Sets the channels of the categories listed; the others keep theirs. Idempotent. A "
            "category listed twice or an unknown one changes nothing (400)."
        ),
    )
    def put(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        preferences.preferences_set(user=request.user, changes=data.validated_data["preferences"])
        return Response(PreferencesOut(_out(request.user)).data)
